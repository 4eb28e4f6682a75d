"""Regressions from the core review against the real vas-agent process: the
descriptor limit, a removed runtime_dir, secrets on FIFOs, URLs with "@" in the
userinfo, JSON answers for every failure, and the drain before stopping."""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import time

import psutil
import pytest

from agent.client import request

from .harness import BIN, alive, config, fill, wait_for

pytestmark = pytest.mark.integration

#: A cheap stand-in for FFmpeg: one progress report, then it idles (live, no CPU).
IDLE = ["/bin/sh", "-c", "printf 'frame=1\\nprogress=continue\\n'; exec sleep 3600", "{progress}"]
#: Exits 7 on SIGTERM: its exit status tells a graceful stop from PDEATHSIG's SIGKILL.
TRAPS_TERM = ["/bin/sh", "-c", "trap 'exit 7' TERM; printf 'frame=1\\nprogress=continue\\n'; "
              "while :; do sleep 0.2; done", "{progress}"]
NO_RECORDING = {"recording": {"enabled": False}, "stall_timeout": 0}


def _nofile_prefix() -> tuple[tuple[str, ...], int]:
    """prlimit as systemd sets it (1024 soft / 524288 hard), or 1024 / our hard limit
    where this sandbox may not raise the hard limit."""
    hard = 524288
    probe = subprocess.run(["prlimit", f"--nofile=1024:{hard}", "true"], capture_output=True)
    if probe.returncode != 0:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ("prlimit", f"--nofile=1024:{hard}"), hard


@pytest.mark.slow
def test_500_streams_fit_under_systemds_default_soft_limit(agent_factory):
    prefix, hard = _nofile_prefix()
    assert hard >= 2500, "the hard limit itself is too low to prove anything"
    streams = {f"s{i:03d}": {"command": IDLE} for i in range(500)}
    agent = agent_factory(config(streams, **NO_RECORDING)).start(prefix=prefix)
    ids = list(streams)
    states = wait_for(lambda: (s := agent.streams()) and all(s[i]["state"] == "live" for i in ids) and s,
                      120, "500 live streams")
    assert not any("Too many open files" in " ".join(s["last_error"]) for s in states.values())
    limits = psutil.Process(agent.proc.pid).rlimit(psutil.RLIMIT_NOFILE)
    assert limits == (hard, hard)  # the soft limit was raised to the hard one
    assert agent.stop(timeout=60) == 0


def test_check_warns_when_streams_cannot_fit_the_limit(agent_factory):
    agent = agent_factory(config({f"s{i}": {"command": IDLE} for i in range(300)}, **NO_RECORDING))
    out = subprocess.run(["prlimit", "--nofile=512:512", str(BIN / "vas-agent"),
                          "--config", str(agent.config_path), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "300 enabled streams need about 1264 file descriptors but the limit is 512" in out.stderr


@pytest.mark.slow
def test_a_removed_runtime_dir_comes_back_and_shutdown_is_graceful(agent_factory):
    agent = agent_factory(config({"cam": {"command": TRAPS_TERM}}, **NO_RECORDING)).start()
    pid = agent.wait_state("cam", "live")["pid"]
    shutil.rmtree(agent.runtime_dir)
    wait_for(lambda: agent.snapshot()["agent"]["status"] == "running", 5, "state.json to come back")
    wait_for(lambda: (agent.runtime_dir / "agent.sock").exists(), 5, "the control socket to come back")
    status = agent.vasctl("status")
    assert status.returncode == 0 and "live" in status.stdout, status.stderr
    reload = agent.vasctl("reload")
    assert reload.returncode == 0 and "unchanged: 1" in reload.stdout, reload.stderr
    age = time.time() - (agent.runtime_dir / "state.json").stat().st_mtime
    assert age < 2.5  # the heartbeat goes on
    shutil.rmtree(agent.runtime_dir)
    assert agent.stop() == 0
    assert "stopped: cam (exit status 7; stopping)" in agent.log() and not alive(pid)


def test_a_full_runtime_filesystem_does_not_skip_the_graceful_stop(agent_factory, tmp_path):
    agent = agent_factory(config({"cam": {"command": TRAPS_TERM}}, **NO_RECORDING))
    agent.runtime_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(agent.runtime_dir)], check=True)
    try:
        agent.start()
        agent.wait_state("cam", "live")
        fill(agent.runtime_dir)  # ENOSPC from here on
        assert agent.stop() == 0
        assert "stopped: cam (exit status 7; stopping)" in agent.log()
        assert "cannot write snapshot" in agent.log()
    finally:
        agent.kill()
        subprocess.run(["umount", "-l", str(agent.runtime_dir)], check=False)


def test_secret_on_a_fifo_is_refused_on_reload_and_sigterm_stops_promptly(agent_factory, tmp_path):
    secret = tmp_path / "password"
    secret.write_text("pw\n")
    cam = {"url": f"rtsp://admin:${{file:{secret}}}@127.0.0.1:9/x", **NO_RECORDING}
    agent = agent_factory(config({"cam": cam})).start()
    wait_for(lambda: agent.streams()["cam"]["pid"], 10, "a first process")
    secret.unlink()
    os.mkfifo(secret)  # no writer: a read would block forever
    cam2 = dict(cam, url=cam["url"].replace("/x", "/y"))
    agent.write_config(config({"cam": cam2, "extra": cam2}))
    agent.signal(signal.SIGHUP)
    wait_for(lambda: (agent.snapshot()["config"]["last_reload"] or {}).get("ok") is False, 10, "the refusal")
    error = agent.snapshot()["config"]["last_reload"]["error"]
    assert any(f"secret file {secret} is not a regular file" in e for e in error)
    started = time.monotonic()
    assert agent.stop(timeout=20) == 0
    assert time.monotonic() - started < 10
    assert "extra" not in {s["id"] for s in json.loads((agent.runtime_dir / "state.json").read_text())["streams"]}


@pytest.mark.slow
def test_userinfo_with_at_signs_never_leaks(agent_factory):
    password = "p@ss/w#rd"
    url = f"rtsp://user@corp.example:{password}@127.0.0.1:9/stream"  # nothing listens on port 9
    agent = agent_factory(config({"cam": {"url": url}})).start()
    wait_for(lambda: agent.streams()["cam"]["restarts"] >= 1, 30, "a failed attempt")
    shown = [(agent.runtime_dir / "state.json").read_text(), agent.vasctl("status").stdout,
             agent.vasctl("status", "--json").stdout]
    agent.stop()
    shown.append(agent.log())
    for text in shown:
        assert password not in text and "p@ss" not in text and "w#rd" not in text
    assert "rtsp://user@corp.example:***@127.0.0.1:9/stream" in shown[0]


def test_every_control_failure_answers_json(agent_factory):
    agent = agent_factory(config({"cam": {"command": IDLE}}, **NO_RECORDING)).start()
    sock = str(agent.runtime_dir / "agent.sock")
    for method, path, code in (("GET", "/nope", 404), ("DELETE", "/reload", 405)):
        status, body = request(sock, method, path)
        assert status == code and "error" in body
    agent.write_raw(agent.config_path.read_text() + "bad: !!int abc\n")
    status, body = request(sock, "POST", "/reload")
    assert status == 422 and any("invalid int value 'abc'" in d for d in body["details"])
    assert agent.snapshot()["config"]["last_reload"]["ok"] is False


@pytest.mark.slow
def test_drain_reports_not_ready_before_any_stream_is_signalled(agent_factory):
    cfg = config({"cam": {"command": TRAPS_TERM}}, **NO_RECORDING)
    cfg["node"] = {"drain_period": "2s"}
    agent = agent_factory(cfg).start()
    pid = agent.wait_state("cam", "live")["pid"]
    agent.signal(signal.SIGTERM)
    wait_for(lambda: agent.snapshot()["agent"]["status"] == "draining", 2, "draining")
    assert alive(pid) and agent.streams()["cam"]["state"] == "live"
    time.sleep(1.0)
    assert alive(pid)  # still within the drain period
    assert agent.proc.wait(10) == 0
    assert "stopped: cam (exit status 7; stopping)" in agent.log()


def test_a_second_sigterm_skips_the_drain(agent_factory):
    cfg = config({"cam": {"command": TRAPS_TERM}}, **NO_RECORDING)
    cfg["node"] = {"drain_period": "60s"}
    agent = agent_factory(cfg).start()
    agent.wait_state("cam", "live")
    agent.signal(signal.SIGTERM)
    wait_for(lambda: agent.snapshot()["agent"]["status"] == "draining", 2, "draining")
    started = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.proc.wait(15) == 0 and time.monotonic() - started < 10


@pytest.mark.slow
def test_vasctl_status_works_while_the_file_is_broken(agent_factory):
    agent = agent_factory(config({"cam": {"command": IDLE}}, **NO_RECORDING)).start()
    agent.wait_state("cam", "live")
    agent.write_raw(agent.config_path.read_text() + "streams: [broken\n")
    status = agent.vasctl("status")
    assert status.returncode == 0 and "live" in status.stdout
    assert "invalid YAML" in status.stderr and f"using runtime_dir {agent.runtime_dir}" in status.stderr
