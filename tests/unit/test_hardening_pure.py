"""Regressions from the core review, pure parts: overflow in the backoff, bounded
parser buffers, redaction of every URL shape FFmpeg accepts, the log filter."""
from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
import time

import pytest

from agent.blocking import in_thread
from agent.config.model import RestartPolicy
from agent.redact import RedactingFilter, redact, redact_url
from agent.supervise.backoff import restart_delay
from agent.supervise.ffmpeg import PROGRESS_LINE_MAX, ProgressParser
from agent.supervise.limits import fd_warning, fds_needed


def test_extreme_policies_never_overflow():
    policy = RestartPolicy(initial_delay=1e-300, max_delay=1e10, jitter=0.2)
    for attempt in (1, 1024, 1025, 5000, 10**7):
        assert 0 <= restart_delay(policy, attempt, rand=0.5) <= policy.max_delay
    assert restart_delay(RestartPolicy(max_delay=float("inf")), 3, rand=0.5) < float("inf")


def test_progress_parser_memory_is_bounded_for_newline_free_junk():
    parser, junk = ProgressParser(), b"x" * 65536
    started = time.process_time()
    for _ in range(300):
        assert parser.feed(junk) == []
    assert len(parser._partial) <= PROGRESS_LINE_MAX  # was 19.6 MB
    assert time.process_time() - started < 1.0
    # Still parses once real reports come again.
    [report] = parser.feed(b"\nframe=5\nprogress=continue\n")
    assert report.frame == 5


def test_progress_parser_bounds_unknown_keys_and_nan():
    parser = ProgressParser()
    parser.feed(b"".join(b"k%d=v\n" % i for i in range(10_000)))
    assert parser._fields == {}
    [report] = parser.feed(b"fps=nan\nframe=3\nprogress=continue\n")
    assert report.fps == 0.0 and report.frame == 3


@pytest.mark.parametrize("url,password", [
    ("rtsp://user@domain:pass@10.0.0.5/s1", "pass"),
    ("rtsp://user@domain:p@ss@cam.local:554/s1", "p@ss"),
    ("rtsp://admin:pa/ss@cam/s1", "pa/ss"),
    ("rtsp://admin:pa ss@cam/s1", "pa ss"),
    ("rtsp://admin:pa#ss@cam/s1", "pa#ss"),
    ("rtsp://admin:p:a:s:s@[fe80::1]:554/s1", "p:a:s:s"),
])
def test_userinfo_is_redacted_up_to_the_last_at(url, password):
    for text in (url, f"[rtsp @ 0x55d] {url}: Connection refused", f"'{url}' and rtsp://b:x2@h2/"):
        shown = redact_url(text)
        assert password not in shown and ":***@" in shown
    assert redact_url("[tcp @ 0x5] rtsp://cam.local:554/x failed") == "[tcp @ 0x5] rtsp://cam.local:554/x failed"


def test_the_log_filter_redacts_messages_arguments_and_tracebacks():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactingFilter(frozenset({"hunter22"})))
    log = logging.getLogger("test.redacting")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.error("cam %s failed with %s", "rtsp://u@d:p@ss@cam/", "hunter22")
        try:
            raise ValueError("bad url rtsp://admin:hunter22@cam/ and rtsp://x:topsecret@h/")
        except ValueError:
            log.exception("reload failed")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert "hunter22" not in text and "p@ss" not in text and "topsecret" not in text
    assert "rtsp://u@d:***@cam/" in text and "Traceback" in text


def test_redact_hides_known_secrets_anywhere():
    assert redact("token=abcdef-secret", frozenset({"abcdef-secret"})) == "token=***"


def test_fd_budget():
    assert fds_needed(500) > 1500
    assert fd_warning(500, 1024) is not None and "LimitNOFILE" in fd_warning(500, 1024)
    assert fd_warning(500, 524288) is None


async def test_a_call_that_hangs_on_a_fifo_times_out_and_leaves_the_loop_free(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    with pytest.raises(TimeoutError):
        await in_thread(lambda: open(fifo).read(), timeout=0.5, name="test-fifo")
    ticker.cancel()
    assert ticks > 10  # the event loop kept running meanwhile
    stuck = [t for t in threading.enumerate() if t.name == "test-fifo"]
    assert stuck and stuck[0].daemon  # abandoned, and it cannot hold up the exit
    with open(fifo, "w"):
        pass  # release the thread


@pytest.mark.parametrize("content", [
    '[1, 2]', '{"streams": 5}', '{"streams": [7, {"pid": "x"}, {"pid": 1, "pid_started_at": 0}]}'])
def test_a_damaged_snapshot_does_not_stop_the_agent_from_starting(tmp_path, content):
    from agent.supervise.orphans import kill_orphans
    path = tmp_path / "state.json"
    path.write_text(content)
    assert kill_orphans(path) == []


def test_loop_lag_histogram_is_cumulative():
    from agent.publisher import LoopLag
    lag = LoopLag()
    for sample in (0.0005, 0.003, 0.2, 7.0, -1):
        lag.observe(sample)
    view = lag.view()
    assert view["count"] == 5 and view["max"] == 7.0
    assert dict((str(b), n) for b, n in view["buckets"])["0.001"] == 2  # -1 counts as 0
    assert view["buckets"][-1] == ["+Inf", 5]


def test_malloc_arenas_are_capped_unless_the_environment_says():
    """A fresh interpreter (no thread has allocated yet), as vas-agent's main() is."""
    import subprocess
    import sys
    probe = "from agent.supervise.limits import limit_malloc_arenas as f; print(f())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "True"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**env, "MALLOC_ARENA_MAX": "4"})
    assert out.stdout.strip() == "False"
