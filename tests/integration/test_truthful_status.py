"""Status that tells the truth, with the real agent, FFmpeg, the RTSP camera, the
reference SFU on real mediasoup and the exporter process (issue 16, items 15, 15b and 17)."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from camera.fixture import free_port
from sfu.real_sfu import start_real_sfu

from .harness import config, wait_for
from .test_exporter import Exporter, http
from .test_sfu import producers_by_stream, receiving, sfu_section

pytestmark = [pytest.mark.integration, pytest.mark.slow]
IDS = ["cam1", "cam2"]


def _node(agent_factory, tmp_path, streams: dict, **sections):
    port = free_port()
    cfg = config(streams)
    cfg["exporter"] = {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp_path / "tokens"), "stale_after": "3s"}
    cfg.update(sections)
    agent = agent_factory(cfg).start()
    return agent, port


def _metric(text: str, line_start: str) -> str | None:
    return next((line.split()[-1] for line in text.splitlines() if line.startswith(line_start)), None)


def test_an_unreachable_external_sfu_shows_in_streams_readyz_and_metrics(rtsp_camera, agent_factory, tmp_path):
    sfu_port = free_port()
    sfu = start_real_sfu(sfu_port)
    try:
        agent, port = _node(agent_factory, tmp_path, {i: {"url": rtsp_camera.url(i)} for i in IDS},
                            mediasoup=sfu_section(sfu_port, managed=False))
        agent.wait_all("live", IDS, timeout=45)
        exporter = Exporter(agent, port)
        try:
            wait_for(lambda: http(port, "/readyz")[0] == 200, 10, "ready")
            pids = agent.pids()
            os.kill(sfu.pid, signal.SIGSTOP)  # node hung (its worker runs on), not gone: the hardest kind to notice
            try:
                started = time.monotonic()
                wait_for(lambda: all(s["state"] != "live" for s in agent.streams().values()), 20,
                         "every stream to leave live")
                noticed = time.monotonic() - started
                assert all(s["producer"] is None for s in agent.streams().values())
                status, body = http(port, "/readyz")
                assert status == 503 and "sfu_up" in json.loads(body)["failing"]
                text = http(port, "/v2/metrics")[1]
                assert _metric(text, "vas_sfu_up ") == "0.0"
                assert all(_metric(text, f'vas_stream_up{{stream="{i}"}}') == "0.0" for i in IDS)
                time.sleep(max(0.0, 16 - noticed))
            finally:
                os.kill(sfu.pid, signal.SIGCONT)
            agent.wait_all("live", IDS, timeout=45)
            wait_for(lambda: http(port, "/readyz")[0] == 200, 15, "ready again")
            assert agent.pids() == pids  # FFmpeg recorded all along: no restart for an SFU outage
            assert sorted(receiving(sfu_port, IDS)) == IDS, producers_by_stream(sfu_port)  # mediasoup counts
            print(f"SFU outage noticed by every stream in {noticed:.1f}s")
        finally:
            exporter.stop()
    finally:
        os.killpg(sfu.pid, signal.SIGKILL)
        sfu.wait(5)


CHEAP_REC = {"command": ["tail", "-F", "-s", "60", "{recording_dir}/.alive"], "ready_after": "0.5s",
             "stall_timeout": 0, "recording": {"retention": 0}}


def test_a_killed_agent_stops_claiming_live_in_api_metrics_and_vasctl(agent_factory, tmp_path):
    agent, port = _node(agent_factory, tmp_path, {i: dict(CHEAP_REC) for i in IDS})
    agent.wait_all("live", IDS)
    exporter = Exporter(agent, port)
    try:
        old_pid = agent.streams()["cam1"]["pid"]
        agent.kill()  # SIGKILL: the snapshot stays behind, saying live
        time.sleep(3 + 5)  # stale_after 3 s, and 5 s more
        body = json.loads(http(port, "/v2/health/streams/cam1")[1])
        assert body["state"] == "unknown" and body["up"] is False and body["stale"] is True, body
        assert body["pid"] is None and body["last_known_pid"] == old_pid and body["last_known_state"] == "live"
        assert body["snapshot_age_seconds"] >= 7
        first = http(port, "/v2/metrics")[1]
        time.sleep(1.5)
        second = http(port, "/v2/metrics")[1]
        for text in (first, second):
            assert all(_metric(text, f'vas_stream_up{{stream="{i}"}}') == "0.0" for i in IDS)
            assert "vas_stream_uptime_seconds{" not in text and _metric(text, "vas_agent_up ") == "0.0"
        system = json.loads(http(port, "/v2/health/system")[1])
        assert system["streams"]["by_state"] == {"unknown": 2} and system["agent"]["stale"] is True
        status = agent.vasctl("status")
        assert status.returncode == 1 and "unknown (was live)" in status.stdout, status.stdout + status.stderr
        data = json.loads(agent.vasctl("status", "--json").stdout)
        assert {s["state"] for s in data["streams"]} == {"unknown"} and all(s["pid"] is None for s in data["streams"])
    finally:
        exporter.stop()


#: Hang catchers, not timing goals (those are printed): without a deadline a change to a stopped
#: agent would wait 60 s; the call deadline is 3 s, and a loaded 2-core box adds seconds of process start-up.
GAVE_UP = 20.0
#: A stale snapshot answers without calling the agent at all: well under the 3 s call deadline.
AT_ONCE = 2.0


def test_changes_to_a_stopped_agent_answer_503_quickly_and_are_never_applied(agent_factory, tmp_path):
    from agent import tokens
    agent, port = _node(agent_factory, tmp_path, {i: dict(CHEAP_REC) for i in IDS})
    admin = tokens.add(tmp_path / "tokens", "ops", "admin")
    pids = {sid: s["pid"] for sid, s in agent.wait_all("live", IDS).items()}
    old = agent.recordings / "cam1" / "old-20200101.ts"  # what a cleanup would delete (not the newest)
    for name, days in ((old.name, 40), ("old-20200102.ts", 30)):
        (old.parent / name).write_bytes(b"x" * 1000)
        os.utime(old.parent / name, (time.time() - days * 86400,) * 2)
    exporter = Exporter(agent, port)
    calls = [("POST", "/v2/health/consumers/c1/heartbeat"),
             ("POST", "/v2/health/recordings/cam1/cleanup?retention_days=1"),
             ("POST", "/v2/health/recordings/cleanup?retention_days=1")]
    try:
        agent.signal(signal.SIGSTOP)
        try:
            # Right away (the snapshot still looks fresh): sent with a deadline, given up on quickly.
            for method, path in calls:
                started = time.monotonic()
                status, body = http(port, path, method, admin)
                took = time.monotonic() - started
                assert status == 503 and json.loads(body)["applied"] is False and took < GAVE_UP, (path, took, body)
                print(f"stopped agent, fresh snapshot: {path} -> 503 in {took:.2f}s")
            started = time.monotonic()
            restart = agent.vasctl("restart", "cam2")
            assert restart.returncode == 1 and "not applied" in restart.stderr and time.monotonic() - started < GAVE_UP
            print(f"stopped agent: vasctl restart -> exit 1 in {time.monotonic() - started:.2f}s")
            time.sleep(1)
            # Stale now: 503 at once, nothing sent.
            for method, path in calls:
                started = time.monotonic()
                status, body = http(port, path, method, admin)
                assert status == 503 and "nothing was sent" in json.loads(body)["error"]
                assert time.monotonic() - started < AT_ONCE
                print(f"stopped agent, stale snapshot: {path} -> 503 in {time.monotonic() - started:.3f}s")
            assert agent.vasctl("restart", "cam1").returncode == 1
        finally:
            agent.signal(signal.SIGCONT)
        wait_for(lambda: http(port, "/readyz")[0] == 200, 10, "the agent seen alive again")
        time.sleep(2)  # whatever it read after SIGCONT has been handled by now
        assert old.exists(), "a cleanup answered 503 was applied later"
        streams = agent.streams()
        assert {sid: streams[sid]["pid"] for sid in IDS} == pids, "a restart answered 'not applied' was applied"
        assert all(streams[sid]["restart_reasons"].get("manual", 0) == 0 for sid in IDS)
        assert "dropped: read after its caller's deadline" in agent.log()
        # And a live agent still takes the same calls.
        assert http(port, calls[1][1], "POST", admin)[0] == 200 and not old.exists()
    finally:
        exporter.stop()


def test_the_exporter_process_answers_503_for_a_corrupt_snapshot(agent_factory, tmp_path):
    from agent import snapshot

    from ..exporter.conftest import snapshot_dict, stream
    from ..exporter.test_agent_state import CORRUPTIONS
    port = free_port()
    cfg = config({i: dict(CHEAP_REC) for i in IDS})
    cfg["exporter"] = {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp_path / "tokens"), "stale_after": "30s"}
    agent = agent_factory(cfg)  # never started: the test writes the snapshot the exporter reads
    agent.runtime_dir.mkdir()
    state = agent.runtime_dir / snapshot.SNAPSHOT_NAME
    good = snapshot_dict([stream(i) for i in IDS])
    snapshot.write_atomic(state, good)
    exporter = Exporter(agent, port)
    try:
        assert http(port, "/v2/health/streams/cam1")[0] == 200
        for name in ("non-utf8 garbage", "truncated", "stream id a number", "pid a string", "deep nesting"):
            (state.parent / "corrupt.tmp").write_bytes(CORRUPTIONS[name])
            os.replace(state.parent / "corrupt.tmp", state)  # bytes as they are, replaced like the agent does
            for path in ("/v2/health/streams/cam1", "/v2/health/recordings/cam1", "/v2/health/ingestion"):
                status, body = http(port, path)
                assert status == 503 and "agent state unreadable" in json.loads(body)["error"], (name, path, body)
            status, text = http(port, "/v2/metrics")
            assert status == 200 and _metric(text, "vas_agent_state_readable ") == "0.0", name
            assert http(port, "/readyz")[0] == 503
            shown = agent.vasctl("status")
            assert shown.returncode == 1 and "agent state unreadable" in shown.stderr, (name, shown.stderr)
            snapshot.write_atomic(state, good)
            assert http(port, "/v2/health/streams/cam1")[0] == 200, name
        assert exporter.proc.poll() is None and "Traceback" not in exporter.log.read_text()
    finally:
        exporter.stop()
