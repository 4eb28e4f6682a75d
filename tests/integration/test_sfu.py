"""The SFU side with real FFmpeg, the real RTSP camera and the reference SFU on real
mediasoup (sfu/server.js, tests/sfu/real_sfu.py).  What mediasoup received is read from
its own producer stats (``GET /producers``: ``producer.getStats()``), never from the
agent's view.  The stand-in (tests/sfu/standin_sfu.py) only plays an SFU that answers
500: tests that use it say so in their name."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agent.client import request
from agent.config.model import StreamConfig, stream_ssrc
from camera.fixture import SUITE_FPS
from sfu.real_sfu import call, consume_without_client, sfu_command, sfu_section_env, start_real_sfu
from sfu.real_sfu import producers_by_stream as producers_by_stream

from .harness import alive, config, fill, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

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


def sfu_section(port: int, *, managed: bool = True, standin: tuple[str, ...] | None = None, **extra) -> dict:
    """``mediasoup:`` for the reference SFU on real mediasoup (run by the agent when ``managed``);
    ``standin=(args...)`` runs the misbehaving stand-in instead."""
    section = {"api_url": f"http://127.0.0.1:{port}", "ready_timeout": "10s",
               "restart": QUICK_RESTART, "stop_timeout": "2s", **extra}
    if standin is not None:
        section["command"] = [sys.executable, str(STANDIN), "--port", str(port), *standin]
    elif managed:
        section["command"] = sfu_command(port)
        section["env"] = sfu_section_env()
    return section


def sfu_config(streams: dict, port: int, **kw) -> dict:
    cfg = config(streams)
    cfg["mediasoup"] = sfu_section(port, **kw)
    cfg["consumers"] = {"heartbeat_timeout": "3s", "sweep_interval": "1s"}
    return cfg


def packets(port: int, sid: str) -> int:
    [producer] = producers_by_stream(port)[sid]
    return producer["packets"]


def receiving(port: int, sids, seconds: float = 1.0) -> dict[str, dict]:
    """mediasoup's one producer per stream, each counting more packets after ``seconds``."""
    before = {sid: ps for sid, ps in producers_by_stream(port).items() if sid in sids}
    assert all(len(ps) == 1 for ps in before.values()), before
    time.sleep(seconds)
    after = {sid: ps for sid, ps in producers_by_stream(port).items() if sid in sids}
    return {sid: ps[0] for sid, ps in after.items()
            if sid in before and ps[0]["producer_id"] == before[sid][0]["producer_id"]
            and ps[0]["packets"] > before[sid][0]["packets"]}


def start_standin(port: int, *args: str) -> subprocess.Popen:
    """The stand-in (tests/sfu/standin_sfu.py), for what a real SFU cannot be made to do."""
    proc = subprocess.Popen([sys.executable, str(STANDIN), "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status == 200
    wait_for(healthy, 10, "the stand-in SFU")
    return proc


def test_streams_go_live_with_rtp_at_their_ssrc_and_payload_type(rtsp_camera, agent_factory):
    """mediasoup itself counts the RTP of each stream's producer at the configured SSRC and
    payload type (it drops other SSRCs and payload types: test_sfu_client shows it)."""
    from camera.fixture import free_port
    port = free_port()
    streams = {"cam1": {"url": rtsp_camera.url("cam1")}, "cam2": {"url": rtsp_camera.url("cam2"),
                                                                   "rtp": {"ssrc": 4242, "payload_type": 100}}}
    agent = agent_factory(sfu_config(streams, port)).start()
    live = agent.wait_all("live", ["cam1", "cam2"], timeout=45)
    by_stream = wait_for(lambda: len(r := receiving(port, streams)) == 2 and r, 10, "mediasoup counting both")
    assert (by_stream["cam2"]["ssrc"], by_stream["cam2"]["payload_type"]) == (4242, 100)
    assert (by_stream["cam1"]["ssrc"], by_stream["cam1"]["payload_type"]) == \
        (stream_ssrc(StreamConfig(id="cam1", url=None)), 96)
    for sid in ("cam1", "cam2"):
        assert by_stream[sid]["score"] is not None and by_stream[sid]["score"] > 0, by_stream[sid]
        assert live[sid]["producer"]["confirmed"] is True
        assert live[sid]["producer"]["id"] == by_stream[sid]["producer_id"]
    snap = agent.snapshot()
    assert snap["sfu"]["state"] == "up" and alive(snap["sfu"]["pid"])
    wait_for(lambda: len(agent.segments("cam1")) >= 2, 20, "recording next to RTP")


def test_sfu_sigkill_brings_every_stream_back_without_duplicates(rtsp_camera, agent_factory):
    """The SFU's process group (node and its mediasoup worker) SIGKILLed: every stream has one
    new producer that mediasoup counts packets on within 15 s of the new SFU being up."""
    from camera.fixture import free_port
    port = free_port()
    streams = {f"cam{i}": {"url": rtsp_camera.url(f"cam{i}")} for i in (1, 2, 3)}
    agent = agent_factory(sfu_config(streams, port)).start()
    agent.wait_all("live", list(streams), timeout=45)
    old = {sid: ps[0]["producer_id"] for sid, ps in producers_by_stream(port).items()}
    sfu_pid = agent.snapshot()["sfu"]["pid"]
    os.killpg(sfu_pid, signal.SIGKILL)
    wait_for(lambda: agent.snapshot()["sfu"]["pid"] not in (None, sfu_pid), 15, "a new SFU process")
    up_at = time.monotonic()
    wait_for(lambda: agent.snapshot()["sfu"]["state"] == "up", 15, "the SFU up again")
    agent.wait_all("live", list(streams), timeout=20)
    flowing = wait_for(lambda: len(r := receiving(port, streams, 0.5)) == 3 and r, 15, "mediasoup counting all three")
    assert time.monotonic() - up_at < 15
    by_stream = producers_by_stream(port)
    assert sorted(by_stream) == sorted(streams) and all(len(v) == 1 for v in by_stream.values())
    assert all(flowing[sid]["producer_id"] != old[sid] for sid in streams)
    assert all(s["restart_reasons"].get("sfu", 0) >= 1 for s in agent.streams().values())


def test_agent_restart_adopts_producers_of_an_external_sfu(rtsp_camera, agent_factory, real_sfu):
    """A restarted agent adopts the producers mediasoup still has: the same producer ids, no
    duplicate, and mediasoup keeps counting the new FFmpeg's packets on them (a comedia
    transport locked onto the old FFmpeg's source port would count nothing)."""
    port = real_sfu.port
    streams = {"cam1": {"url": rtsp_camera.url("cam1")}, "cam2": {"url": rtsp_camera.url("cam2")}}
    agent = agent_factory(sfu_config(streams, port, managed=False)).start()
    agent.wait_all("live", list(streams), timeout=45)
    before = {sid: [p["producer_id"] for p in ps] for sid, ps in producers_by_stream(port).items()}
    assert agent.stop() == 0
    agent.start()
    agent.wait_all("live", list(streams), timeout=45)
    assert "adopted" in agent.log()
    deadline = time.monotonic() + 10  # longer than the agent takes to call a producer silent
    while time.monotonic() < deadline:
        after = {sid: [p["producer_id"] for p in ps] for sid, ps in producers_by_stream(port).items()}
        assert after == before, "not adopted, or re-created after adoption"
        assert sorted(receiving(port, streams)) == sorted(streams), producers_by_stream(port)
    assert real_sfu.closed() == []


def test_stale_consumers_are_closed_heartbeated_ones_kept_and_force_close_works(rtsp_camera, agent_factory,
                                                                                real_sfu):
    """Real consumers on real WebRTC transports: the one without heartbeats is closed on the
    SFU, the heartbeated one kept, and a force close closes its viewer's transport."""
    port = real_sfu.port
    agent = agent_factory(sfu_config({"cam1": {"url": rtsp_camera.url("cam1")}}, port, managed=False)).start()
    agent.wait_state("cam1", "live", timeout=45)
    made = [consume_without_client(port, "cam1", f"viewer{i}") for i in range(3)]
    ids = [m["consumer_id"] for m in made]
    sock = str(agent.runtime_dir / "agent.sock")
    wait_for(lambda: len(agent.snapshot()["consumers"]["active"]) == 3, 10, "three sessions")
    deadline = time.monotonic() + 6  # twice the 3 s heartbeat timeout
    while time.monotonic() < deadline:
        assert request(sock, "POST", f"/consumers/{ids[0]}/heartbeat")[0] == 200
        time.sleep(0.5)
    active = {c["consumer_id"] for c in agent.snapshot()["consumers"]["active"]}
    assert ids[0] in active and ids[1] not in active  # stale one closed, heartbeated one kept
    on_sfu = {c["consumer_id"] for c in get(port, "/consumers")}  # type: ignore[union-attr]
    assert on_sfu == {ids[0]}, on_sfu
    assert request(sock, "DELETE", f"/streams/cam1/consumers/{ids[0]}")[0] == 204
    assert get(port, "/consumers") == []
    with pytest.raises(urllib.error.HTTPError) as gone:  # the viewer's transport is closed too
        call(port, "POST", f"/viewers/{made[0]['viewer_id']}/consume", {"stream_id": "cam1", "rtpCapabilities": {}})
    assert gone.value.code == 404
    assert request(sock, "POST", f"/consumers/{ids[0]}/heartbeat")[0] == 404
    assert request(sock, "POST", "/consumers/nope/heartbeat")[0] == 404
    ended = wait_for(lambda: (e := agent.snapshot()["consumers"]["ended"]).get("admin") == 1 and e, 5,
                     "the admin close in the snapshot")
    assert ended.get("stale", 0) >= 1
    assert "viewer" not in json.dumps(agent.snapshot()["streams"])


def test_sfu_gone_recording_keeps_growing(rtsp_camera, agent_factory):
    from camera.fixture import free_port
    port = free_port()
    sfu = start_real_sfu(port)
    agent = agent_factory(sfu_config({"cam1": {"url": rtsp_camera.url("cam1")}}, port, managed=False)).start()
    agent.wait_state("cam1", "live", timeout=45)
    pid = agent.streams()["cam1"]["pid"]
    os.killpg(sfu.pid, signal.SIGKILL)  # node and its mediasoup worker
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


def test_contract_errors_are_logged_and_retried_without_a_crash_with_a_misbehaving_standin(rtsp_camera,
                                                                                           agent_factory):
    """An SFU that answers 500 to everything (a real one cannot be made to: the stand-in)."""
    from camera.fixture import free_port
    port = free_port()
    cfg = sfu_config({"cam1": {"url": rtsp_camera.url("cam1")}}, port, standin=("--chaos", "500"))
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
        assert packets(port, "cam1") > before + 3 * SUITE_FPS  # the viewers' feed kept flowing: 3 s of 5 at least
        stream = agent.streams()["cam1"]
        assert stream["pid"] == pid and stream["state"] == "live"
        # Space again: recording resumes by itself (the recording output is reopened).
        (agent.recordings / "filler").unlink()
        count = len(agent.segments("cam1"))
        wait_for(lambda: len(agent.segments("cam1")) > count + 2, 45, "recording to resume")
    finally:
        agent.stop()
        subprocess.run(["umount", "-l", str(agent.recordings)], check=False)


def test_a_recording_folder_removed_or_replaced_by_a_file_keeps_rtp_and_recording_resumes(rtsp_camera,
                                                                                          agent_factory):
    """``rm -r`` of a live camera's folder: FFmpeg's tee drops its HLS slave (RTP goes on) and one
    restart makes the folder again.  A file put where the folder was: no restart (it could not
    make the folder: the stream would not start at all, viewers' feed and all), one log line, RTP
    goes on; the file removed, recording resumes."""
    from camera.fixture import free_port
    port = free_port()
    agent = agent_factory(sfu_config({"cam1": {"url": rtsp_camera.url("cam1"), "stall_timeout": "15s"}}, port)).start()
    pid = agent.wait_state("cam1", "live", timeout=45)["pid"]
    folder = agent.recordings / "cam1"
    wait_for(lambda: len(agent.segments("cam1")) >= 2, 20, "the first segments")
    shutil.rmtree(folder)
    wait_for(lambda: len(agent.segments("cam1")) >= 2, 30, "segments in the folder made again")
    stream = agent.streams()["cam1"]
    assert stream["pid"] != pid and stream["restart_reasons"] == {"stall": 1}, stream
    assert "recording stopped: cam1 (no new segment while media flows" in agent.log()
    pid = agent.wait_state("cam1", "live", timeout=20)["pid"]

    shutil.rmtree(folder)
    folder.write_text("not a folder\n")
    before = packets(port, "cam1")
    time.sleep(16)  # past the watch's 10 s of quiet, and a few of its checks more
    assert packets(port, "cam1") > before + 10 * SUITE_FPS  # the viewers' feed kept flowing
    stream = agent.streams()["cam1"]
    assert stream["pid"] == pid and stream["state"] == "live" and stream["restarts"] == 1, stream
    assert agent.log().count(f"recording stopped: {folder} is not a directory") == 1, agent.log()[-2000:]
    folder.unlink()
    wait_for(lambda: len(agent.segments("cam1")) >= 2, 30, "recording to resume once the file is gone")
    assert agent.streams()["cam1"]["restart_reasons"] == {"stall": 2}


@contextlib.contextmanager
def dropped(port: int):
    """Loopback UDP to ``port`` dropped by the kernel (iptables) while inside."""
    rule = ["OUTPUT", "-o", "lo", "-p", "udp", "--dport", str(port), "-j", "DROP"]
    subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True)


def test_a_producer_that_stops_receiving_is_degraded_then_repaired(rtsp_camera, agent_factory, real_sfu):
    """FFmpeg's RTP to its producer's port dropped by the kernel: mediasoup counts nothing more,
    the stream degrades to ready, and a new producer (a new port) brings it back live."""
    port = real_sfu.port
    agent = agent_factory(sfu_config({"cam1": {"url": rtsp_camera.url("cam1")}}, port, managed=False)).start()
    first = agent.wait_state("cam1", "live", timeout=45)["producer"]["id"]
    [producer] = producers_by_stream(port)["cam1"]
    pointed = agent.streams()["cam1"]["restart_reasons"].get("sfu", 0)
    with dropped(producer["rtp_port"]):
        wait_for(lambda: agent.streams()["cam1"]["state"] == "ready", 15, "the stream degraded to ready")
        assert "degraded: cam1" in agent.log()
        stream = wait_for(lambda: (s := agent.streams()["cam1"])["state"] == "live" and s["producer"]["id"] != first
                          and s, 30, "a new producer, live again")
    assert stream["restart_reasons"].get("sfu", 0) == pointed + 1  # FFmpeg pointed at the new producer, once
    assert [p["producer_id"] for p in get(port, "/producers")] == [stream["producer"]["id"]]
    assert list(receiving(port, ["cam1"])) == ["cam1"]


def test_a_producer_locked_onto_another_sender_is_re_created(agent_factory, real_sfu):
    """comedia: mediasoup's transport locks onto the first sender's IP:port.  A datagram from
    a throwaway socket before FFmpeg's first packet locks it there: mediasoup counts none of
    FFmpeg's packets, so the agent must notice and re-create the producer."""
    port = real_sfu.port
    command = ["/bin/sh", "-c", 'sleep 2; exec "$@"', "late", *SYNTHETIC]
    agent = agent_factory(sfu_config({"synthetic": {"command": command, "recording": {"enabled": False}}},
                                     port, managed=False)).start()
    [first] = wait_for(lambda: producers_by_stream(port).get("synthetic"), 10, "the first producer", interval=0.05)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(b"\x80\x60\x00\x01" + b"\x00" * 8, (first["rtp_host"], first["rtp_port"]))
    locked = wait_for(lambda: (p := producers_by_stream(port)["synthetic"][0])["source_port"] and p, 5, "locked")
    assert locked["producer_id"] == first["producer_id"]
    stream = wait_for(lambda: (s := agent.streams()["synthetic"])["state"] == "live"
                      and s["producer"]["id"] != first["producer_id"] and s, 30, "a new producer, live")
    assert [p["producer_id"] for p in get(port, "/producers")] == [stream["producer"]["id"]]
    assert list(receiving(port, ["synthetic"])) == ["synthetic"]


SYNTHETIC = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-nostats",
             "-progress", "{progress}", "-stats_period", "1", "-re", "-f", "lavfi",
             "-i", "testsrc2=size=160x120:rate=10", "-c:v", "libx264", "-preset", "ultrafast", "-g", "10",
             "-f", "rtp", "-ssrc", "{ssrc}", "-payload_type", "{payload_type}", "{rtp_url}"]


def test_a_verbatim_command_with_rtp_placeholders_gets_a_producer(agent_factory, real_sfu):
    agent = agent_factory(sfu_config({"synthetic": {"command": SYNTHETIC, "recording": {"enabled": False}}},
                                     real_sfu.port, managed=False)).start()
    stream = agent.wait_state("synthetic", "live", timeout=45)
    [stats] = receiving(real_sfu.port, ["synthetic"]).values()
    assert stats["ssrc"] == stream["producer"]["ssrc"] and stats["producer_id"] == stream["producer"]["id"]
