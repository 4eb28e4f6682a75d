"""The agent against the REAL SFU: sfu/server.js on real mediasoup 3.8.4, real FFmpeg,
the real RTSP test camera.  What mediasoup does that a stand-in never modelled
(issue 17, "Found when the agent met a real mediasoup"): comedia locks a
transport to the first sender's IP:port, RTCP is not muxed by FFmpeg, the
router's H.264 profiles, the SFU's start-up time, a score that is null until
the first packet.  Every packet count here is mediasoup's own (getStats()).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import time

import pytest

from sfu.real_sfu import get, sfu_command, sfu_section_env, start_real_sfu

from .harness import AgentProcess, config, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUICK_RESTART = {"initial_delay": "0.3s", "multiplier": 2, "max_delay": "2s", "jitter": 0.1}
#: Longer than the agent's repair of a silent producer (3 polls of 2 s, plus one): a second,
#: needless restart would have happened by then.
REPAIR_WINDOW = 10.0


def real_sfu_config(streams: dict, port: int, *, managed: bool = True, extra: tuple[str, ...] = (),
                    **defaults) -> dict:
    """An agent config whose SFU is the reference app (run by the agent, or on its own).

    These tests count spawns and none is about stalls: a respawned FFmpeg that needs more than the
    quick 4 s for its first progress (the camera's RTSP session torn down and set up again, on a
    loaded machine) would be killed as stalled and counted as one more spawn.
    """
    defaults.setdefault("stall_timeout", "15s")
    cfg = config(streams, **defaults)
    section = {"api_url": f"http://127.0.0.1:{port}", "ready_timeout": "20s", "restart": QUICK_RESTART,
               "stop_timeout": "2s"}
    if managed:
        section.update(command=sfu_command(port, *extra), env=sfu_section_env())
    cfg["mediasoup"] = section
    return cfg


def producers(port: int) -> dict[str, list[dict]]:
    """mediasoup's own view: stream id -> its producers (with packets from getStats())."""
    out: dict[str, list[dict]] = {}
    for p in get(port, "/producers"):  # type: ignore[union-attr]
        out.setdefault(p["stream_id"], []).append(p)
    return out


def only_producer(port: int, sid: str) -> dict:
    [producer] = producers(port)[sid]
    return producer


def spawns(agent: AgentProcess, sid: str, since: int = 0) -> int:
    """FFmpeg processes the agent started for ``sid`` (its log from byte ``since`` on)."""
    return len(re.findall(rf"spawned: '{re.escape(sid)}' with pid", agent.log()[since:]))


def grows_on(port: int, sid: str, producer_id: str, by: int = 50, timeout: float = 20) -> None:
    """Packets on THAT producer grow by ``by`` (mediasoup counts them: comedia accepted the sender)."""
    start = only_producer(port, sid)["packets"]
    wait_for(lambda: (p := only_producer(port, sid))["producer_id"] == producer_id and p["packets"] >= start + by,
             timeout, f"packets of {sid} to grow on producer {producer_id}")


def new_pid(agent: AgentProcess, sid: str, old: int) -> int:
    return wait_for(lambda: (pid := agent.streams()[sid]["pid"]) not in (None, old) and pid, 20,
                    f"a new FFmpeg for {sid}")


def assert_one_more_spawn(agent: AgentProcess, port: int, sid: str, producer_id: str, before: int,
                          since: int = 0) -> None:
    """After one FFmpeg restart: the same producer receives again, and no second restart follows."""
    grows_on(port, sid, producer_id)
    time.sleep(REPAIR_WINDOW)
    assert only_producer(port, sid)["producer_id"] == producer_id, agent.log()[-3000:]
    assert spawns(agent, sid, since) == before + 1, agent.log()[-3000:]
    assert "receives nothing" not in agent.log()[since:]
    grows_on(port, sid, producer_id)


# -- item 1: comedia locks the transport to the first sender's IP:port --------------------
def _one_camera_receiving(rtsp_camera, agent_factory):
    """An agent with cam1 live on the real SFU, mediasoup counting; (agent, port, stream, producer, spawns)."""
    from camera.fixture import free_port
    port = free_port()
    agent = agent_factory(real_sfu_config({"cam1": {"url": rtsp_camera.url("cam1")}}, port)).start()
    stream = agent.wait_state("cam1", "live", timeout=45)
    producer_id = stream["producer"]["id"]
    grows_on(port, "cam1", producer_id)
    return agent, port, stream, producer_id, spawns(agent, "cam1")


def test_ffmpeg_sigkill_keeps_the_producer_and_costs_one_spawn(rtsp_camera, agent_factory):
    agent, port, stream, producer_id, before = _one_camera_receiving(rtsp_camera, agent_factory)
    os.kill(stream["pid"], signal.SIGKILL)
    new_pid(agent, "cam1", stream["pid"])
    assert_one_more_spawn(agent, port, "cam1", producer_id, before)


def test_vasctl_restart_keeps_the_producer_and_costs_one_spawn(rtsp_camera, agent_factory):
    agent, port, stream, producer_id, before = _one_camera_receiving(rtsp_camera, agent_factory)
    done = agent.vasctl("restart", "cam1")
    assert done.returncode == 0, done.stderr
    new_pid(agent, "cam1", stream["pid"])
    assert_one_more_spawn(agent, port, "cam1", producer_id, before)


def test_agent_restart_keeps_adopted_producers_receiving(rtsp_camera, agent_factory, tmp_path):
    from camera.fixture import free_port
    port = free_port()
    sfu = start_real_sfu(port, log=tmp_path / "sfu.log")
    try:
        streams = {"cam1": {"url": rtsp_camera.url("cam1")}, "cam2": {"url": rtsp_camera.url("cam2")}}
        agent = agent_factory(real_sfu_config(streams, port, managed=False)).start()
        agent.wait_all("live", list(streams), timeout=45)
        ids = {sid: only_producer(port, sid)["producer_id"] for sid in streams}
        assert agent.stop() == 0
        since = len(agent.log())
        agent.start()
        agent.wait_all("live", list(streams), timeout=45)
        for sid in streams:
            assert_one_more_spawn(agent, port, sid, ids[sid], 0, since)
        for sid in streams:  # adopted once, said once (not again at every poll)
            assert agent.log()[since:].count(f"{sid} adopted") == 1, agent.log()[since:]
    finally:
        sfu.kill()
        sfu.wait(5)


# -- item 2: RTCP ------------------------------------------------------------------------
def test_no_rtcp_goes_to_the_port_after_the_producers(rtsp_camera, agent_factory):
    """FFmpeg's RTCP would go to rtp_port+1, which mediasoup never reads (and may be another producer's)."""
    from camera.fixture import free_port
    port = free_port()
    agent = agent_factory(real_sfu_config({"cam1": {"url": rtsp_camera.url("cam1")}}, port)).start()
    stream = agent.wait_state("cam1", "live", timeout=45)
    producer = only_producer(port, "cam1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as beside:
        beside.bind(("127.0.0.1", producer["rtp_port"] + 1))
        beside.settimeout(0.5)
        # From the start of an FFmpeg run: its first sender report goes with its first packets.
        done = agent.vasctl("restart", "cam1")
        assert done.returncode == 0, done.stderr
        new_pid(agent, "cam1", stream["pid"])
        received, deadline = 0, time.monotonic() + 12  # FFmpeg sends a sender report every ~5 s
        while time.monotonic() < deadline:
            try:
                received += len(beside.recv(2048)) > 0
            except TimeoutError:
                pass
    assert received == 0
    grows_on(port, "cam1", producer["producer_id"])  # and the RTP still counts


# -- item 4: start-up --------------------------------------------------------------------
def test_one_spawn_per_stream_at_start_and_no_log_line_without_a_change(rtsp_camera, agent_factory):
    from camera.fixture import free_port
    port = free_port()
    streams = {f"cam{i}": {"url": rtsp_camera.url(f"cam{i}")} for i in (1, 2, 3)}
    agent = agent_factory(real_sfu_config(streams, port)).start()
    agent.wait_all("live", list(streams), timeout=45)
    time.sleep(REPAIR_WINDOW)  # several polls
    assert {sid: spawns(agent, sid) for sid in streams} == {sid: 1 for sid in streams}, agent.log()
    assert "adopted" not in agent.log()  # made once; a poll adopts nothing new, and says nothing


# -- item 3: the stream's real H.264 profile ---------------------------------------------
def test_a_high_profile_camera_goes_live_on_a_high_only_router(camera_factory, agent_factory):
    """Without its profile-level-id, produce() matches only a Constrained Baseline router entry."""
    from camera.fixture import free_port
    camera = camera_factory(("hi",), profile="high")
    port = free_port()
    cfg = real_sfu_config({"hi": {"url": camera.url("hi")}}, port, extra=("--h264-profiles", "640032"))
    agent = agent_factory(cfg).start()
    stream = agent.wait_state("hi", "live", timeout=45)
    producer = only_producer(port, "hi")
    assert producer["profile_level_id"][:4] == "6400", producer  # High, no constraint flags: the camera's SPS
    assert stream["producer"]["profile_level_id"] == producer["profile_level_id"]
    grows_on(port, "hi", producer["producer_id"])


# -- item 5: a score that is null until the first packet ------------------------------------
def test_a_producer_that_never_received_has_a_null_score_and_is_not_live(camera_factory, agent_factory):
    """mediasoup's producer.score is [] until the first packet: the SFU says null, the agent shows null."""
    from camera.fixture import free_port
    camera = camera_factory(("cam1",), start=False)  # FFmpeg cannot connect: nothing is ever sent
    port = free_port()
    agent = agent_factory(real_sfu_config({"cam1": {"url": camera.url("cam1")}}, port)).start()
    listed = wait_for(lambda: producers(port).get("cam1"), 30, "a producer for cam1")
    assert listed[0]["score"] is None and listed[0]["packets"] == 0 and listed[0]["source_port"] is None
    shown = wait_for(lambda: agent.streams()["cam1"]["producer"], 10, "the producer in the snapshot")
    assert shown["score"] is None and shown["confirmed"] is False
    time.sleep(REPAIR_WINDOW)
    stream = agent.streams()["cam1"]
    assert stream["state"] in ("error", "initializing") and stream["producer"]["id"] == listed[0]["producer_id"]
    status = agent.vasctl("status")
    assert status.returncode == 0 and "Traceback" not in status.stderr + agent.log()


def test_a_camera_that_changes_profile_gets_a_producer_with_the_new_one(camera_factory, agent_factory):
    """Probed again at each spawn: a producer's codec cannot change, so a new profile needs a new producer."""
    from camera.fixture import free_port
    camera = camera_factory(("cam",), profile="high")
    port = free_port()
    cfg = real_sfu_config({"cam": {"url": camera.url("cam")}}, port, extra=("--h264-profiles", "42e01f,640032"))
    agent = agent_factory(cfg).start()
    first = agent.wait_state("cam", "live", timeout=45)["producer"]
    assert first["profile_level_id"][:4] == "6400"
    camera.profile = None  # the operator reconfigures the camera: Constrained Baseline from now on
    camera.restart()
    wait_for(lambda: (p := only_producer(port, "cam"))["profile_level_id"][:2] == "42" and p["packets"] > 50,
             60, "a producer announcing the camera's new profile, receiving")
    assert "now sends H.264 42" in agent.log()
    assert agent.wait_state("cam", "live", timeout=20)["producer"]["profile_level_id"][:2] == "42"


def test_a_source_port_taken_while_ffmpeg_was_down_gets_a_new_producer_before_the_spawn(rtsp_camera, agent_factory):
    """Another program took the port between two runs: a new producer (and port), and still one spawn."""
    from camera.fixture import free_port
    port = free_port()
    agent = agent_factory(real_sfu_config({"cam1": {"url": rtsp_camera.url("cam1")}}, port)).start()
    stream = agent.wait_state("cam1", "live", timeout=45)
    first = only_producer(port, "cam1")
    before = spawns(agent, "cam1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        os.kill(stream["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 2
        while True:  # the port is free the moment FFmpeg is gone; the agent respawns 0.3 s later
            try:
                squatter.bind(("0.0.0.0", first["source_port"]))
                break
            except OSError:
                assert time.monotonic() < deadline, "FFmpeg never let go of its source port"
                time.sleep(0.01)
        new_pid(agent, "cam1", stream["pid"])
        second = wait_for(lambda: (p := only_producer(port, "cam1"))["producer_id"] != first["producer_id"] and p,
                          20, "a new producer")
        assert_one_more_spawn(agent, port, "cam1", second["producer_id"], before)
    assert second["source_port"] != first["source_port"]
    assert "is taken; making a new producer" in agent.log()


def test_a_stream_added_by_a_reload_spawns_once(rtsp_camera, agent_factory):
    """The producer of a new stream is made alongside its start: no spawn, then a restart onto it."""
    from camera.fixture import free_port
    port = free_port()
    streams = {"cam1": {"url": rtsp_camera.url("cam1")}}
    agent = agent_factory(real_sfu_config(streams, port)).start()
    agent.wait_state("cam1", "live", timeout=45)
    agent.write_config(real_sfu_config({**streams, "cam2": {"url": rtsp_camera.url("cam2")}}, port))
    done = agent.vasctl("reload")
    assert done.returncode == 0, done.stderr
    agent.wait_state("cam2", "live", timeout=30)
    grows_on(port, "cam2", only_producer(port, "cam2")["producer_id"])
    time.sleep(REPAIR_WINDOW)
    assert (spawns(agent, "cam1"), spawns(agent, "cam2")) == (1, 1), agent.log()
