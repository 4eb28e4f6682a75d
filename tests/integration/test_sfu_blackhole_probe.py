"""Cameras that black-hole the agent (accept the RTSP connection, never answer) next to a
good one, against the real SFU: the good stream's H.264 probe and producer must not
wait behind theirs.  Real FFmpeg/ffprobe, the real RTSP camera, mediasoup 3.8.4.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from camera.fixture import free_port

from .harness import wait_for
from .test_real_sfu_agent import real_sfu_config, spawns

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: More than the probes run at once (agent/supervise/h264_probe.py PROBE_CONCURRENCY = 4), twice over.
BLACK_HOLES = 8


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A TCP port that accepts every connection and never says a word (a hung camera)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_a_good_camera_is_not_held_up_by_cameras_that_black_hole_the_probe(rtsp_camera, agent_factory,
                                                                            black_hole):
    """Black holes must not hold the probe slots: if each held one of the 4 for the probe's 5 s, the
    good camera's producer would come 12 s after start, so its stream would start without RTP after
    waiting 10 s and be restarted onto the producer (2 spawns; live after 14.8 s)."""
    streams = {f"dead{i}": {"url": f"rtsp://127.0.0.1:{black_hole}/dead{i}"} for i in range(BLACK_HOLES)}
    streams["good"] = {"url": rtsp_camera.url("cam1")}  # last: the slots go in config order
    port = free_port()
    agent = agent_factory(real_sfu_config(streams, port)).start()
    started = time.monotonic()
    wait_for(lambda: agent.streams()["good"]["state"] == "live", 45, "the good stream to be live")
    took = time.monotonic() - started
    time.sleep(3)  # a second spawn would follow the late producer within this
    print(f"good stream live {took:.1f} s after start; spawns {spawns(agent, 'good')}")
    assert spawns(agent, "good") == 1, agent.log()[-4000:]
    assert "good: no SFU producer" not in agent.log()
