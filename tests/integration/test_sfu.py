"""The SFU side with real FFmpeg, the real RTSP camera and the stand-in SFU
(tests/sfu/standin_sfu.py: a TEST STAND-IN for the operator's MediaSoup app,
receiving and parsing the real RTP)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from agent.client import request
from agent.config import StreamConfig, stream_ssrc

from .harness import alive, config, fill, wait_for

pytestmark = pytest.mark.integration

STANDIN = Path(__file__).resolve().parents[1] / "sfu" / "standin_sfu.py"
QUICK_RESTART = {"initial_delay": "0.3s", "multiplier": 2, "max_delay": "2s", "jitter": 0.1}


def get(port: int, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read() or b"null")


def post(port: int, path: str, body: dict) -> object:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read() or b"null")


def sfu_section(port: int, *, managed: bool = True, **extra) -> dict:
    section = {"api_url": f"http://127.0.0.1:{port}", "ready_timeout": "10s",
               "restart": QUICK_RESTART, "stop_timeout": "2s", **extra}
    if managed:
        section["command"] = [sys.executable, str(STANDIN), "--port", str(port)]
    return section


def sfu_config(streams: dict, port: int, **kw) -> dict:
    cfg = config(streams)
    cfg["mediasoup"] = sfu_section(port, **kw)
    cfg["consumers"] = {"heartbeat_timeout": "3s", "sweep_interval": "1s"}
    return cfg


def producers_by_stream(port: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    listed: list[dict] = get(port, "/producers")  # type: ignore[assignment]
    for p in listed:
        out.setdefault(p["stream_id"], []).append(p)
    return out


def packets(port: int, sid: str) -> int:
    [producer] = producers_by_stream(port)[sid]
    return producer["packets"]


def start_standin(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(STANDIN), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status == 200
    wait_for(healthy, 10, "the stand-in SFU")
    return proc


def test_streams_go_live_with_rtp_at_their_ssrc_and_payload_type(rtsp_camera, agent_factory):
    from camera.fixture import free_port
    port = free_port()
    streams = {"cam1": {"url": rtsp_camera.url("cam1")}, "cam2": {"url": rtsp_camera.url("cam2"),
                                                                   "rtp": {"ssrc": 4242, "payload_type": 100}}}
    agent = agent_factory(sfu_config(streams, port)).start()
    live = agent.wait_all("live", ["cam1", "cam2"], timeout=45)
    stats = get(port, "/_test/stats")
    by_stream = {s["stream_id"]: s for s in stats["producers"]}
    assert by_stream["cam2"]["ssrc"] == 4242 and by_stream["cam2"]["payload_type"] == 100
    assert by_stream["cam1"]["ssrc"] == stream_ssrc(StreamConfig(id="cam1", url=None))
    for sid in ("cam1", "cam2"):
        assert by_stream[sid]["packets"] > 0 and by_stream[sid]["mismatched_ssrc"] == 0
        assert live[sid]["producer"]["confirmed"] is True
    snap = agent.snapshot()
    assert snap["sfu"]["state"] == "up" and alive(snap["sfu"]["pid"])
    wait_for(lambda: len(agent.segments("cam1")) >= 2, 20, "recording next to RTP")


def test_sfu_sigkill_brings_every_stream_back_without_duplicates(rtsp_camera, agent_factory):
    from camera.fixture import free_port
    port = free_port()
    streams = {f"cam{i}": {"url": rtsp_camera.url(f"cam{i}")} for i in (1, 2, 3)}
    agent = agent_factory(sfu_config(streams, port)).start()
    agent.wait_all("live", list(streams), timeout=45)
    sfu_pid = agent.snapshot()["sfu"]["pid"]
    os.killpg(sfu_pid, signal.SIGKILL)
    wait_for(lambda: agent.snapshot()["sfu"]["pid"] not in (None, sfu_pid), 15, "a new SFU process")
    up_at = time.monotonic()
    wait_for(lambda: agent.snapshot()["sfu"]["state"] == "up", 15, "the SFU up again")
    agent.wait_all("live", list(streams), timeout=20)
    assert time.monotonic() - up_at < 15
    by_stream = producers_by_stream(port)
    assert sorted(by_stream) == sorted(streams) and all(len(v) == 1 for v in by_stream.values())
    assert all(s["restart_reasons"].get("sfu", 0) >= 1 for s in agent.streams().values())


def test_agent_restart_adopts_producers_of_an_external_sfu(rtsp_camera, agent_factory):
    from camera.fixture import free_port
    port = free_port()
    sfu = start_standin(port)
    try:
        streams = {"cam1": {"url": rtsp_camera.url("cam1")}, "cam2": {"url": rtsp_camera.url("cam2")}}
        agent = agent_factory(sfu_config(streams, port, managed=False)).start()
        agent.wait_all("live", list(streams), timeout=45)
        before = {sid: [p["producer_id"] for p in ps] for sid, ps in producers_by_stream(port).items()}
        assert agent.stop() == 0
        agent.start()
        agent.wait_all("live", list(streams), timeout=45)
        after = {sid: [p["producer_id"] for p in ps] for sid, ps in producers_by_stream(port).items()}
        assert after == before  # adopted, not duplicated
        assert "adopted" in agent.log()
    finally:
        sfu.kill()
        sfu.wait(5)


def test_stale_consumers_are_closed_heartbeated_ones_kept_and_force_close_works(rtsp_camera, agent_factory):
    from camera.fixture import free_port
    port = free_port()
    agent = agent_factory(sfu_config({"cam1": {"url": rtsp_camera.url("cam1")}}, port)).start()
    agent.wait_state("cam1", "live", timeout=45)
    ids = [post(port, "/_test/consumers", {"stream_id": "cam1", "client_id": f"viewer{i}"})["consumer_id"]
           for i in range(3)]
    sock = str(agent.runtime_dir / "agent.sock")
    wait_for(lambda: len(agent.snapshot()["consumers"]["active"]) == 3, 10, "three sessions")
    deadline = time.monotonic() + 6  # twice the 3 s heartbeat timeout
    while time.monotonic() < deadline:
        assert request(sock, "POST", f"/consumers/{ids[0]}/heartbeat")[0] == 200
        time.sleep(0.5)
    active = {c["consumer_id"] for c in agent.snapshot()["consumers"]["active"]}
    assert ids[0] in active and ids[1] not in active  # stale one closed, heartbeated one kept
    assert request(sock, "DELETE", f"/streams/cam1/consumers/{ids[0]}")[0] == 204
    assert request(sock, "POST", f"/consumers/{ids[0]}/heartbeat")[0] == 404
    assert request(sock, "POST", "/consumers/nope/heartbeat")[0] == 404
    ended = wait_for(lambda: (e := agent.snapshot()["consumers"]["ended"]).get("admin") == 1 and e, 5,
                     "the admin close in the snapshot")
    assert ended.get("stale", 0) >= 1
    assert "viewer" not in json.dumps(agent.snapshot()["streams"])


def test_sfu_gone_recording_keeps_growing(rtsp_camera, agent_factory):
    from camera.fixture import free_port
    port = free_port()
    sfu = start_standin(port)
    agent = agent_factory(sfu_config({"cam1": {"url": rtsp_camera.url("cam1")}}, port, managed=False)).start()
    agent.wait_state("cam1", "live", timeout=45)
    pid = agent.streams()["cam1"]["pid"]
    sfu.kill()
    sfu.wait(5)
    wait_for(lambda: agent.snapshot()["sfu"]["state"] != "up", 15, "the SFU seen down")
    count = len(agent.segments("cam1"))
    wait_for(lambda: len(agent.segments("cam1")) >= count + 3, 20, "three more segments without the SFU")
    assert agent.streams()["cam1"]["pid"] == pid  # the same FFmpeg: recording never stopped


def test_verbatim_command_without_progress_goes_live_and_is_restarted(agent_factory):
    command = ["/bin/sh", "-c", "exec sleep 600"]
    agent = agent_factory(config({"box": {"command": command, "ready_after": "1s"}})).start()
    pid = agent.wait_state("box", "live", timeout=10)["pid"]
    os.kill(pid, signal.SIGKILL)
    stream = wait_for(lambda: (s := agent.streams()["box"])["state"] == "live" and s["pid"] != pid and s,
                      15, "a new live process")
    assert stream["restart_reasons"] == {"exit": 1}


def test_contract_errors_are_logged_and_retried_without_a_crash(rtsp_camera, agent_factory):
    from camera.fixture import free_port
    port = free_port()
    cfg = sfu_config({"cam1": {"url": rtsp_camera.url("cam1")}}, port)
    cfg["mediasoup"]["command"] += ["--chaos", "500"]
    agent = agent_factory(cfg).start()
    wait_for(lambda: "sfu: not ready: /health did not answer 200 within 10s" in agent.log(), 30,
             "a logged refusal")
    wait_for(lambda: agent.snapshot()["sfu"]["restarts"] >= 1, 15, "a retry")
    assert "Traceback" not in agent.log()
    # Recording goes on while the SFU misbehaves; live needs a confirmed producer.
    assert agent.wait_state("cam1", "ready", timeout=20)["producer"] is None
    assert agent.stop() == 0


def test_a_full_recording_disk_does_not_stop_rtp(rtsp_camera, agent_factory, tmp_path):
    from camera.fixture import free_port
    port = free_port()
    agent = agent_factory(sfu_config({"cam1": {"url": rtsp_camera.url("cam1")}}, port))
    agent.recordings.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(agent.recordings)], check=True)
    try:
        agent.start()
        agent.wait_state("cam1", "live", timeout=45)
        pid = agent.streams()["cam1"]["pid"]
        fill(agent.recordings)  # ENOSPC from here on
        time.sleep(3)  # FFmpeg meets ENOSPC and drops the recording slave
        before = packets(port, "cam1")
        time.sleep(5)
        assert packets(port, "cam1") > before + 50  # the viewers' feed kept flowing
        stream = agent.streams()["cam1"]
        assert stream["pid"] == pid and stream["state"] == "live"
        # Space again: recording resumes by itself (the recording output is reopened).
        (agent.recordings / "filler").unlink()
        count = len(agent.segments("cam1"))
        wait_for(lambda: len(agent.segments("cam1")) > count + 2, 45, "recording to resume")
    finally:
        agent.stop()
        subprocess.run(["umount", "-l", str(agent.recordings)], check=False)


def test_a_producer_that_stops_receiving_is_degraded_then_repaired(rtsp_camera, agent_factory):
    from camera.fixture import free_port
    port = free_port()
    agent = agent_factory(sfu_config({"cam1": {"url": rtsp_camera.url("cam1")}}, port)).start()
    first = agent.wait_state("cam1", "live", timeout=45)["producer"]["id"]
    post(port, f"/_test/producers/{first}/mute", {})
    wait_for(lambda: agent.streams()["cam1"]["state"] == "ready", 15, "the stream degraded to ready")
    assert "degraded: cam1" in agent.log()
    stream = wait_for(lambda: (s := agent.streams()["cam1"])["state"] == "live" and s["producer"]["id"] != first
                      and s, 30, "a new producer, live again")
    assert stream["restart_reasons"].get("sfu", 0) == 1  # started on the first producer, re-pointed once
    assert [p["producer_id"] for p in get(port, "/producers")] == [stream["producer"]["id"]]


def test_a_verbatim_command_with_rtp_placeholders_gets_a_producer(agent_factory):
    from camera.fixture import free_port
    port = free_port()
    command = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-nostats",
               "-progress", "{progress}", "-stats_period", "1", "-re", "-f", "lavfi",
               "-i", "testsrc2=size=160x120:rate=10", "-c:v", "libx264", "-preset", "ultrafast", "-g", "10",
               "-f", "rtp", "-ssrc", "{ssrc}", "-payload_type", "{payload_type}", "{rtp_url}"]
    agent = agent_factory(sfu_config({"synthetic": {"command": command, "recording": {"enabled": False}}},
                                     port)).start()
    stream = agent.wait_state("synthetic", "live", timeout=45)
    [stats] = get(port, "/_test/stats")["producers"]
    assert stats["packets"] > 0 and stats["ssrc"] == stream["producer"]["ssrc"]
