"""A pause of the agent itself (SIGSTOP, a VM freeze) is not a stall of its children (issue 16, item 16)."""
from __future__ import annotations

import signal
import time

import pytest

from .harness import alive, config

pytestmark = pytest.mark.slow


def test_agent_pause_longer_than_stall_timeout_restarts_nothing(rtsp_camera, agent_factory):
    ids = ["cam1", "cam2"]
    agent = agent_factory(config({i: {"url": rtsp_camera.url(i)} for i in ids}, stall_timeout="4s")).start()
    before = {sid: s["pid"] for sid, s in agent.wait_all("live", ids).items() if sid in ids}
    agent.signal(signal.SIGSTOP)
    try:
        time.sleep(10)  # well past stall_timeout: FFmpeg keeps writing progress into the pipe meanwhile
    finally:
        agent.signal(signal.SIGCONT)
    time.sleep(4 + 3)  # another full stall_timeout and more: a wrongly fired stall would show by now
    after = agent.streams()
    assert {sid: after[sid]["pid"] for sid in ids} == before, agent.log()[-3000:]
    assert all(after[sid]["restarts"] == 0 for sid in ids), {sid: after[sid]["restart_reasons"] for sid in ids}
    assert all(alive(pid) for pid in before.values())
    assert "stalled:" not in agent.log()


def test_agent_pause_longer_than_heartbeat_timeout_closes_no_viewer(rtsp_camera, agent_factory, real_sfu):
    """A real consumer on the reference SFU on real mediasoup survives the agent's pause."""
    from agent.client import request
    from sfu.real_sfu import consume_without_client

    from .test_sfu import sfu_config
    port = real_sfu.port
    agent = agent_factory(sfu_config({"cam1": {"url": rtsp_camera.url("cam1")}}, port, managed=False)).start()
    pid = agent.wait_state("cam1", "live", timeout=45)["pid"]  # heartbeat 3 s
    viewer = consume_without_client(port, "cam1", "v")["consumer_id"]
    sock = str(agent.runtime_dir / "agent.sock")
    from .harness import wait_for
    wait_for(lambda: len(agent.snapshot()["consumers"]["active"]) == 1, 10, "the session")
    assert request(sock, "POST", f"/consumers/{viewer}/heartbeat")[0] == 200
    agent.signal(signal.SIGSTOP)
    try:
        time.sleep(8)  # the viewer's heartbeats cannot reach a stopped agent
    finally:
        agent.signal(signal.SIGCONT)
    time.sleep(1)  # the sweep (every 1 s) has run by now; the viewer heartbeats again (every 1-2 s)
    assert request(sock, "POST", f"/consumers/{viewer}/heartbeat")[0] == 200, agent.log()[-2000:]
    assert agent.snapshot()["consumers"]["ended"].get("stale", 0) == 0
    assert agent.streams()["cam1"]["pid"] == pid
    assert [c["consumer_id"] for c in real_sfu_consumers(port)] == [viewer]  # still open on the SFU


def real_sfu_consumers(port: int) -> list[dict]:
    from sfu.real_sfu import get
    return get(port, "/consumers")  # type: ignore[return-value]
