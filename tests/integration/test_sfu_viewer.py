"""A real viewer end to end: camera -> FFmpeg (run by vas-agent) -> RTP -> mediasoup
(the reference app, sfu/server.js, run as mediasoup.command) -> WebRTC -> aiortc,
which decodes the frames (tests/sfu/viewer.py).  No stand-in anywhere."""
from __future__ import annotations

import asyncio
import subprocess
import threading
import time

import pytest

from agent.client import request
from agent.supervise.ffmpeg import RtpTarget, rtp_options
from camera.fixture import free_port
from sfu.real_sfu import call, get, sfu_command, sfu_section_env, start_real_sfu
from sfu.viewer import Frame, Viewer

from .harness import config, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Not the fixture's default (a size nobody produces by accident), and big enough that every
#: keyframe (one a second) fills FFmpeg's RTP packets to their maximum size.
WIDTH, HEIGHT, FPS = 640, 360, 20
HEARTBEAT_TIMEOUT, SWEEP = 3.0, 1.0
#: How often the agent lists the SFU's consumers (agent/sfu/consumers.py: POLL_INTERVAL, or the sweep if shorter).
CONSUMER_POLL = min(5.0, SWEEP)


def real_sfu_config(url: str, port: int, heartbeat_timeout: float) -> dict:
    cfg = config({"cam1": {"url": url}})
    cfg["mediasoup"] = {"api_url": f"http://127.0.0.1:{port}", "command": sfu_command(port),
                        "env": sfu_section_env(), "ready_timeout": "20s", "stop_timeout": "2s",
                        "restart": {"initial_delay": "0.3s", "multiplier": 2, "max_delay": "2s", "jitter": 0.1}}
    cfg["consumers"] = {"heartbeat_timeout": f"{heartbeat_timeout}s", "sweep_interval": f"{SWEEP}s"}
    return cfg


def live_agent(camera_factory, agent_factory, heartbeat_timeout: float = 60):
    cam = camera_factory(("cam1",), fps=FPS, size=f"{WIDTH}x{HEIGHT}")
    port = free_port()
    agent = agent_factory(real_sfu_config(cam.url("cam1"), port, heartbeat_timeout)).start()
    agent.wait_state("cam1", "live", timeout=45)
    return agent, port


def rate(frames: list[Frame]) -> float:
    """Frames per second between the first and the last arrival."""
    return (len(frames) - 1) / (frames[-1].arrived - frames[0].arrived)


def test_a_real_viewer_decodes_the_camera_at_its_size_and_rate(camera_factory, agent_factory):
    agent, port = live_agent(camera_factory, agent_factory)

    async def watch() -> tuple[list[Frame], list[Frame]]:
        async with Viewer(port, "cam1", client_id="alice") as viewer:
            await viewer.wait_frames(FPS, timeout=20)  # the first keyframe can be a second away
            start = len(viewer.frames)
            await asyncio.sleep(6)  # six keyframes
            assert not viewer.closed.is_set(), f"the viewer's transport died: {viewer.states}"
            return viewer.frames[:start], viewer.frames[start:]

    first, window = asyncio.run(watch())
    print(f"real viewer: {len(window)} frames in the window, {rate(window):.1f} fps from a {FPS} fps camera")
    assert {(f.width, f.height) for f in first + window} == {(WIDTH, HEIGHT)}
    assert 0.8 * FPS <= rate(window) <= 1.2 * FPS, f"{rate(window):.1f} fps from a {FPS} fps camera"
    assert len({f.pts for f in window}) == len(window)  # distinct frames, not one repeated
    [producer] = get(port, "/producers")  # type: ignore[misc]
    assert producer["stream_id"] == "cam1" and producer["packets"] > 0
    assert agent.streams()["cam1"]["state"] == "live"


def heartbeat(sock: str, consumer_id: str, stop: threading.Event, answers: list[int]) -> None:
    """Heartbeat through the control socket every 0.5 s until ``stop`` (404 until the agent's first poll)."""
    while not stop.wait(0.5):
        answers.append(request(sock, "POST", f"/consumers/{consumer_id}/heartbeat")[0])


def test_a_viewer_that_stops_heartbeating_is_closed_and_its_client_sees_it(camera_factory, agent_factory):
    agent, port = live_agent(camera_factory, agent_factory, HEARTBEAT_TIMEOUT)
    sock = str(agent.runtime_dir / "agent.sock")
    stop, answers = threading.Event(), []
    # From the silent viewer's consume: the agent's next poll sees it (its first sighting counts as a
    # heartbeat), the first sweep after HEARTBEAT_TIMEOUT closes it; 3 s for the DELETE and the DTLS alert.
    bound = CONSUMER_POLL + HEARTBEAT_TIMEOUT + SWEEP + 3

    async def watch() -> None:
        async with Viewer(port, "cam1", client_id="kept") as kept:
            beat = threading.Thread(target=heartbeat, args=(sock, kept.consumer_id, stop, answers), daemon=True)
            beat.start()
            async with Viewer(port, "cam1", client_id="silent") as silent:
                consumed = time.monotonic()
                await asyncio.gather(kept.wait_frames(10, 20), silent.wait_frames(10, 20))
                closed_at = await silent.wait_closed(timeout=bound)
                assert closed_at - consumed <= bound
                print(f"silent viewer: its client saw the close {closed_at - consumed:.1f} s after consuming "
                      f"(bound {bound:.0f} s); states {silent.states}")
                before = kept.decoded
                await asyncio.sleep(2)
                assert kept.decoded - before >= FPS, "the heartbeating viewer stopped receiving"
                assert not kept.closed.is_set(), kept.states
                listed = {c["consumer_id"] for c in get(port, "/consumers")}  # type: ignore[union-attr]
                assert listed == {kept.consumer_id}
            stop.set()
            await asyncio.to_thread(beat.join, 5)
            # An operator's force-close takes the same way to the client.
            asked = time.monotonic()
            answer = await asyncio.to_thread(request, sock, "DELETE", f"/streams/cam1/consumers/{kept.consumer_id}")
            assert answer[0] == 204
            assert await kept.wait_closed(timeout=3) - asked <= 3

    try:
        asyncio.run(watch())
    finally:
        stop.set()
    assert 200 in answers and set(answers[answers.index(200):]) == {200}, answers
    wait_for(lambda: agent.snapshot()["consumers"]["ended"] == {"stale": 1, "admin": 1}, 5,
             "the agent's snapshot to count one stale and one force-closed session")


@pytest.mark.parametrize("profile", [None, "42c00d", "640015", "f4000d"])
def test_a_real_viewer_decodes_a_stream_announced_with_any_h264_profile(camera_factory, ffmpeg_bin, tmp_path, profile):
    """The producer made the way the agent makes it, announcing ``profile`` (the test camera's
    x264 output is High 4:4:4 Predictive, f4000d; None: no profile-level-id, as before the agent
    announced it).  The viewer must be offered a codec it takes, and decode it."""
    cam = camera_factory(("cam1",), fps=FPS, size=f"{WIDTH}x{HEIGHT}")
    port = free_port()
    sfu = start_real_sfu(port, log=tmp_path / "sfu.log")
    body = {"stream_id": "cam1", "kind": "video", "codec": "H264", "payload_type": 96, "ssrc": 1234,
            **({"profile_level_id": profile} if profile else {})}
    producer: dict = call(port, "POST", "/producers", body)  # type: ignore[assignment]
    rtp = RtpTarget(producer["rtp_host"], producer["rtp_port"], 1234, 96)
    feed = subprocess.Popen([ffmpeg_bin, "-loglevel", "error", "-rtsp_transport", "tcp", "-i", cam.url("cam1"),
                             "-map", "0:v:0", "-c:v", "copy", *rtp_options(rtp), rtp.url],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)

    async def watch() -> tuple[dict, list[Frame]]:
        async with Viewer(port, "cam1") as viewer:
            return viewer.codec, await viewer.wait_frames(FPS, timeout=20)

    try:
        codec, frames = asyncio.run(watch())
    finally:
        feed.kill()
        sfu.kill()
        feed.wait(5)
        sfu.wait(5)
    announced = codec["parameters"]["profile-level-id"]
    assert announced[:2] == (profile or "42")[:2]  # the profile_idc the producer was made with
    assert {(f.width, f.height) for f in frames} == {(WIDTH, HEIGHT)}
