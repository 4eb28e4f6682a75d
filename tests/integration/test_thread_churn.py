"""Respawns start no short-lived thread: each thread the agent starts lives as long as it does.

A thread that comes and goes hands glibc's malloc arenas memory it fragments: the agent's RSS
grew with every one (agent/blocking.py, docs/reliability.md).  Each spawn runs an ffprobe
(its codec and resolution); through asyncio's subprocesses that was a ``waitpid`` thread each.
Real FFmpeg, the real RTSP camera, real SIGKILLs; the agent's threads read from /proc.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from .harness import NO_RECORDING, config, wait_for

pytestmark = pytest.mark.integration

KILLS = 3


def _threads(pid: int) -> set[int]:
    try:
        return {int(tid) for tid in os.listdir(f"/proc/{pid}/task")}
    except FileNotFoundError:
        return set()


def test_respawns_and_their_probes_start_no_thread_that_ends(rtsp_camera, agent_factory):
    ids = ["cam1", "cam2"]
    agent = agent_factory(config({sid: {"url": rtsp_camera.url(sid)} for sid in ids}, **NO_RECORDING)).start()
    assert agent.proc is not None
    pid = agent.proc.pid

    def probed() -> dict | None:  # live, and this run's codec known: its probe has ended
        streams = agent.streams()
        return streams if all(streams[s]["state"] == "live" and (streams[s]["video"] or {}).get("codec")
                              for s in ids) else None
    wait_for(probed, 30, "both streams live with their codec probed")
    seen = _threads(pid)
    for _ in range(KILLS):
        before = agent.pids()
        for sid in ids:
            os.kill(before[sid], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # sampled while it respawns and probes (an ffprobe lasts ~0.1 s)
            seen |= _threads(pid)
            streams = probed()
            if streams and all(streams[s]["pid"] != before[s] for s in ids):
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"not respawned and probed within 30 s: {agent.streams()}")
    time.sleep(1.0)  # the last probes' ends (a probe's codec may be seen before its process is gone)
    ended = seen - _threads(pid)
    assert ended == set(), f"{len(ended)} of the agent's threads started and ended over {KILLS} respawns"
