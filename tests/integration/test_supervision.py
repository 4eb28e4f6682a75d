"""The core slice with real FFmpeg pulling a real RTSP camera (GStreamer)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time

import psutil
import pytest

from .harness import BIN, alive, config, wait_for

pytestmark = pytest.mark.integration

@pytest.mark.slow
def test_streams_go_live_and_record(rtsp_camera, agent_factory):
    agent = agent_factory(config({
        f"cam{i}": {"name": f"Camera {i}", "url": rtsp_camera.url(f"cam{i}")} for i in (1, 2, 3)
    } | {"gate": {"enabled": False, "url": rtsp_camera.url("cam4")}})).start()

    streams = agent.wait_all("live", ["cam1", "cam2", "cam3"])
    assert streams["gate"]["state"] == "stopped" and streams["gate"]["pid"] is None
    for sid in ("cam1", "cam2", "cam3"):
        assert alive(streams[sid]["pid"])
        wait_for(lambda sid=sid: len(agent.segments(sid)) >= 2, 20, f"two segments of {sid}")
        assert streams[sid]["progress"]["frames"] > 0
    snap = agent.snapshot()
    assert snap["agent"]["pid"] == agent.proc.pid
    assert snap["config"]["sha256"] and snap["config"]["path"] == str(agent.config_path)

    table = agent.vasctl("status")
    assert table.returncode == 0, table.stderr
    assert "cam1" in table.stdout and "live" in table.stdout and "gate" in table.stdout
    out = agent.vasctl("status", "--json")
    data = json.loads(out.stdout)
    by_id = {s["id"]: s for s in data["streams"]}
    assert by_id["cam2"]["state"] == "live" and by_id["cam2"]["pid"] == streams["cam2"]["pid"]
    assert by_id["cam2"]["rss_bytes"] > 0 and by_id["cam2"]["restarts"] == 0


@pytest.mark.slow
def test_ffmpeg_sigkill_recovers_to_live(rtsp_camera, agent_factory):
    agent = agent_factory(config({"cam1": {"url": rtsp_camera.url("cam1")}})).start()
    old = agent.wait_state("cam1", "live")["pid"]
    os.kill(old, signal.SIGKILL)
    stream = wait_for(lambda: (s := agent.streams()["cam1"])["state"] == "live" and s["pid"] != old and s,
                      30, "a new live FFmpeg")
    assert stream["restart_reasons"] == {"exit": 1}
    assert stream["last_exit"]["description"] == "terminated by SIGKILL"
    assert "exited: cam1 (terminated by SIGKILL; not expected)" in agent.log()


@pytest.mark.slow
def test_hung_ffmpeg_is_detected_as_stall_and_replaced(rtsp_camera, agent_factory):
    agent = agent_factory(config({"cam1": {"url": rtsp_camera.url("cam1")}}, stall_timeout="4s")).start()
    old = agent.wait_state("cam1", "live")["pid"]
    os.kill(old, signal.SIGSTOP)
    stream = wait_for(lambda: (s := agent.streams()["cam1"])["state"] == "live" and s["pid"] != old and s,
                      30, "the stalled FFmpeg to be replaced")
    assert stream["restart_reasons"].get("stall") == 1
    assert not alive(old)
    assert "stalled: cam1 (no progress for 4s)" in agent.log()


@pytest.mark.slow
def test_camera_down_backs_off_and_recovers_by_itself(camera_factory, agent_factory):
    camera = camera_factory(("cam1",))
    agent = agent_factory(config({"cam1": {"url": camera.url("cam1")}})).start()
    agent.wait_state("cam1", "live")
    camera.stop()
    # Retries while the camera is down: error with a pending restart, the count growing.
    wait_for(lambda: agent.streams()["cam1"]["restarts"] >= 6, 40, "six failed restarts")
    down = agent.streams()["cam1"]
    assert down["state"] in ("error", "initializing")
    assert down["restart_reasons"]["exit"] >= 6
    # An offline camera must not flood the log: the first failures, then one line per interval.
    assert agent.log().count("exited: cam1") <= 4
    # ... and the logged retries back off exponentially (0.3 s, 0.6 s, 1.2 s, jitter 10 %).
    delays = [float(d) for d in re.findall(r"exited: cam1 .*?; retry \d+ in ([\d.]+)s", agent.log())]
    assert len(delays) >= 3 and delays[0] < delays[1] < delays[2], delays
    camera.start()
    stream = agent.wait_state("cam1", "live", timeout=40)
    assert alive(stream["pid"])


@pytest.mark.slow
def test_agent_sigkill_leaves_no_ffmpeg_behind(rtsp_camera, agent_factory):
    agent = agent_factory(config({f"cam{i}": {"url": rtsp_camera.url(f"cam{i}")} for i in (1, 2)})).start()
    pids = [s["pid"] for s in agent.wait_all("live", ["cam1", "cam2"]).values()]
    agent.kill()
    wait_for(lambda: not any(alive(p) for p in pids), 10, "FFmpeg to die with the agent")


@pytest.mark.slow
def test_restarted_agent_kills_a_leftover_ffmpeg(rtsp_camera, agent_factory, tmp_path):
    """Second line of defence: a child that escaped PDEATHSIG is killed by the next agent."""
    agent = agent_factory(config({"cam1": {"url": rtsp_camera.url("cam1")}})).start()
    agent.wait_state("cam1", "live")
    agent.stop()
    # Forge the leftover: a process in its own group, recorded in the old snapshot as cam1.
    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True)
    snap = agent.snapshot()
    snap["streams"][0].update(pid=orphan.pid, pid_started_at=_start_time(orphan.pid))
    (agent.runtime_dir / "state.json").write_text(json.dumps(snap))
    agent.start()
    assert orphan.wait(10) == -signal.SIGKILL
    assert "leftover process group" in agent.log()


def _start_time(pid: int) -> float:
    return psutil.Process(pid).create_time()


@pytest.mark.slow
def test_segments_are_never_overwritten_across_restarts(rtsp_camera, agent_factory):
    agent = agent_factory(config({"cam1": {"url": rtsp_camera.url("cam1")}})).start()
    first = agent.wait_state("cam1", "live")["pid"]
    wait_for(lambda: len(agent.segments("cam1")) >= 2, 20, "segments of the first run")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in agent.segments("cam1")}
    for _ in range(2):
        pid = agent.streams()["cam1"]["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda pid=pid: (s := agent.streams()["cam1"])["state"] == "live" and s["pid"] != pid, 30,
                 "restart")
    wait_for(lambda: len(agent.segments("cam1")) >= len(before) + 2, 20, "segments of later runs")
    after = {p.name: p for p in agent.segments("cam1")}
    for name, digest in before.items():
        assert hashlib.sha256(after[name].read_bytes()).hexdigest() == digest, f"{name} was overwritten"
    assert len({n.split("_")[1] for n in after}) >= 2, "each run must name its segments uniquely"
    assert first != agent.streams()["cam1"]["pid"]


@pytest.mark.slow
def test_sigterm_stops_children_and_exits_zero(rtsp_camera, agent_factory):
    agent = agent_factory(config({"cam1": {"url": rtsp_camera.url("cam1")}})).start()
    pid = agent.wait_state("cam1", "live")["pid"]
    assert agent.stop() == 0
    assert not alive(pid)
    snap = agent.snapshot()
    assert snap["agent"]["status"] == "stopped" and snap["streams"][0]["state"] == "stopped"
    assert not (agent.runtime_dir / "agent.sock").exists()


@pytest.mark.slow
def test_credentials_never_leak(camera_factory, agent_factory):
    password = "S3cr3t-pw"
    camera = camera_factory(("cam1",), user="admin", password=password)
    url = camera.url("cam1").replace("rtsp://", "rtsp://admin:${CAM_PASSWORD}@")
    wrong = camera.url("cam1", user="admin", password=password + "x")
    agent = agent_factory(config({"cam1": {"url": url}, "bad": {"url": wrong}}),
                          env={"CAM_PASSWORD": password}).start()
    agent.wait_state("cam1", "live")
    wait_for(lambda: agent.streams()["bad"]["restarts"] >= 1, 20, "the wrong password to fail")
    texts = {
        "state.json": (agent.runtime_dir / "state.json").read_text(),
        "log": agent.log(),
        "vasctl status": agent.vasctl("status").stdout,
        "vasctl status --json": agent.vasctl("status", "--json").stdout,
    }
    for where, text in texts.items():
        assert password not in text, f"password leaked into {where}"
    assert "rtsp://admin:***@" in texts["state.json"]


def test_invalid_config_starts_nothing(agent_factory, tmp_path):
    agent = agent_factory({"streams": {"cam1": {"url": "rtsp://127.0.0.1:1/x", "stall_timeout": "fast"}}})
    check = subprocess.run([str(BIN / "vas-agent"), "--config", str(agent.config_path), "--check"],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 1
    assert f"{agent.config_path}:" in check.stderr
    assert "streams.cam1.stall_timeout: expected a duration like 20s, got 'fast'" in check.stderr
    run = subprocess.run([str(BIN / "vas-agent"), "--config", str(agent.config_path)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1 and "stall_timeout" in run.stderr
    assert not agent.runtime_dir.exists(), "an invalid config must not start anything"


@pytest.mark.slow
def test_sd_notify_and_children_env(rtsp_camera, agent_factory, tmp_path):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    try:
        agent = agent_factory(config({"cam1": {"url": rtsp_camera.url("cam1")}}))
        agent.start(extra_env={"NOTIFY_SOCKET": str(sock_path)})
        messages = []
        while not any("READY=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert any("STATUS=" in m for m in messages)
        pid = agent.wait_state("cam1", "live")["pid"]
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        assert not any(e.startswith(b"NOTIFY_SOCKET=") for e in environ)
        agent.signal(signal.SIGHUP)
        reload_msgs = [sock.recv(4096).decode(), sock.recv(4096).decode()]
        assert reload_msgs[0].startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert reload_msgs[1].startswith("READY=1\nSTATUS=1 live")
        agent.stop()
        rest = []
        sock.settimeout(2)
        try:
            while True:
                rest.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        assert any("STOPPING=1" in m for m in rest)
    finally:
        sock.close()


@pytest.mark.slow
def test_second_agent_on_same_runtime_dir_refuses(rtsp_camera, agent_factory):
    agent = agent_factory(config({"cam1": {"url": rtsp_camera.url("cam1")}})).start()
    pid = agent.wait_state("cam1", "live")["pid"]
    second = subprocess.run([str(BIN / "vas-agent"), "--config", str(agent.config_path)],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert "another vas-agent" in second.stderr and str(agent.proc.pid) in second.stderr
    time.sleep(0.5)
    assert agent.streams()["cam1"]["pid"] == pid and alive(pid)


def test_unusable_runtime_dir_is_one_clear_line(agent_factory, tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)  # a unix socket path must fit in 108 bytes
    agent = agent_factory({"node": {"runtime_dir": str(deep)}, "streams": {}})
    run = subprocess.run([str(BIN / "vas-agent"), "--config", str(agent.config_path)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert "cannot start:" in run.stderr and "Traceback" not in run.stderr


def test_check_warns_about_programs_missing_on_this_host(agent_factory):
    agent = agent_factory({"node": {"ffmpeg": "ffmpeg-not-installed"},
                           "streams": {"cam1": {"url": "rtsp://127.0.0.1:1/x"}}})
    check = subprocess.run([str(BIN / "vas-agent"), "--config", str(agent.config_path), "--check"],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0 and check.stdout.startswith("ok:")
    assert "warning: node.ffmpeg: 'ffmpeg-not-installed' not found" in check.stderr


@pytest.mark.slow
def test_snapshot_heartbeat_tells_a_hung_agent_from_a_quiet_one(agent_factory):
    agent = agent_factory({"streams": {}}).start()
    path = agent.runtime_dir / "state.json"
    first = os.stat(path)
    time.sleep(2.5)
    later = os.stat(path)
    # Quiet: proven alive by touching (mtime moves), not by rewriting (same inode and content).
    assert later.st_mtime > first.st_mtime and later.st_ino == first.st_ino
    assert agent.vasctl("status").returncode == 0
    agent.signal(signal.SIGSTOP)
    try:
        time.sleep(6)
        hung = agent.vasctl("status")
        assert hung.returncode == 1 and "not responding" in hung.stderr
        assert json.loads(agent.vasctl("status", "--json").stdout)["agent"]["alive"] is False
    finally:
        agent.signal(signal.SIGCONT)
    wait_for(lambda: agent.vasctl("status").returncode == 0, 10, "the agent to be seen alive again")


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
