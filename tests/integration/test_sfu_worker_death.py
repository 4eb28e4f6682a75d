"""The mediasoup worker process dies under the reference SFU run by the agent (real
mediasoup 3.8.4, real camera): the app exits, the agent starts it again, the stream's
producer is re-made and receives, and recording never stopped."""
from __future__ import annotations

import os
import signal

import pytest

from camera.fixture import free_port
from sfu.real_sfu import get

from .harness import wait_for
from .test_real_sfu_agent import producers, real_sfu_config, spawns

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_dead_mediasoup_worker_costs_the_viewers_not_the_recording(rtsp_camera, agent_factory):
    port = free_port()
    agent = agent_factory(real_sfu_config({"cam1": {"url": rtsp_camera.url("cam1")}}, port)).start()
    agent.wait_state("cam1", "live", timeout=45)
    worker = get(port, "/health")["worker_pid"]  # type: ignore[index]
    [old] = producers(port)["cam1"]
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: get(port, "/health")["worker_pid"] != worker, 20, "a new mediasoup worker")  # type: ignore[index]
    wait_for(lambda: [p["packets"] > 0 and p["producer_id"] != old["producer_id"]
                      for p in producers(port).get("cam1", [])] == [True], 30,
             "a new producer of cam1 receiving")
    agent.wait_state("cam1", "live", timeout=20)
    # Recording went on: FFmpeg is restarted once onto the new producer (its RTP target changed), never
    # for the dead SFU itself.
    assert spawns(agent, "cam1") <= 2, agent.log()[-3000:]
