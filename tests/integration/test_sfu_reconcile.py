"""Reconciling with the SFU is periodic, not only at SFU start: a slow SFU that creates
producers after the agent gave up on them leaves no duplicate behind.  A real SFU cannot be
made that slow on demand: the stand-in (tests/sfu/standin_sfu.py, with its create delay)
plays it; real FFmpeg and camera."""
from __future__ import annotations

import time

import pytest

from .harness import wait_for
from .test_sfu import get, post, producers_by_stream, sfu_config, start_standin

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_producer_created_after_its_timeout_is_removed_as_a_duplicate_with_a_slow_standin(rtsp_camera,
                                                                                              agent_factory):
    """Issue 16 item 14: POST /producers answers 9 s late (the agent's timeout is 5 s): the
    agent retries and adopts one; every late duplicate is deleted by a later reconcile."""
    from camera.fixture import free_port
    port = free_port()
    sfu = start_standin(port, "--create-delay", "9")
    try:
        agent = agent_factory(sfu_config({"cam1": {"url": rtsp_camera.url("cam1")}}, port, managed=False)).start()
        agent.wait_state("cam1", "live", timeout=60)
        post(port, "/_test/delay", {"create": 0})
        time.sleep(10)  # every POST still in flight has created its producer by now
        in_use = agent.streams()["cam1"]["producer"]["id"]
        wait_for(lambda: [p["producer_id"] for p in producers_by_stream(port)["cam1"]] == [in_use], 10,
                 "one producer for cam1, the one in use")
        end = time.monotonic() + 5
        while time.monotonic() < end:  # and it stays so
            assert [p["producer_id"] for p in producers_by_stream(port)["cam1"]] == [in_use]
            time.sleep(0.5)
        made = len(get(port, "/_test/stats")["deleted"]) + 1  # type: ignore[call-overload]
        assert made >= 2, "the SFU was not slow enough to make a duplicate"
        assert agent.streams()["cam1"]["state"] == "live"
    finally:
        sfu.kill()
        sfu.wait(5)
