"""The reference SFU (real mediasoup 3.8.4, run by the agent) SIGKILLed while the agent is
still creating producers (right after its /health first answers, during the H.264 probes
and POSTs): every stream must end with exactly one producer that receives, no duplicate."""
from __future__ import annotations

import os
import signal
import time

import pytest

from camera.fixture import free_port
from sfu.real_sfu import healthy

from .harness import wait_for
from .test_real_sfu_agent import producers, real_sfu_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STREAMS = ("cam1", "cam2", "cam3")


def sfu_pid(port: int) -> int | None:
    """The node process listening on the SFU's port (from /proc: no tools needed)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"server.js" in b" ".join(cmdline) and str(port).encode() in cmdline:
            return int(pid)
    return None


@pytest.mark.parametrize("after", [0.5, 1.3, 1.8])
def test_an_sfu_killed_mid_reconcile_leaves_one_receiving_producer_per_stream(rtsp_camera, agent_factory, after):
    port = free_port()
    agent = agent_factory(real_sfu_config({sid: {"url": rtsp_camera.url(sid)} for sid in STREAMS}, port)).start()
    wait_for(lambda: healthy(port), 30, "the SFU's first health")
    time.sleep(after)  # inside the reconcile: probes (~1 s) and POSTs under way
    made = sum(len(v) for v in producers(port).values())
    pid = sfu_pid(port)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    print(f"killed the SFU with {made} of {len(STREAMS)} producers made")

    def settled() -> bool:
        listed = producers(port)
        return all(len(listed.get(sid, [])) == 1 and listed[sid][0]["packets"] > 0 for sid in STREAMS)

    wait_for(settled, 45, "one receiving producer per stream")
    agent.wait_all("live", list(STREAMS), timeout=20)
    time.sleep(6)  # three polls: no duplicate appears, nothing is re-created
    assert all(len(v) == 1 for v in producers(port).values()), producers(port)
