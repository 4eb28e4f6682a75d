"""A pause of the agent itself (SIGSTOP, a VM freeze) is not a stall of its children (issue 16, item 16)."""
from __future__ import annotations

import signal
import time

from .harness import alive, config


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
