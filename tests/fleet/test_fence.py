"""One owner per camera on disk: a frozen (SIGSTOPped) agent's FFmpegs stop before, or
just as, another node takes its cameras (the lease fence, agent/fleet/fence.py). Real etcd,
real agents, real FFmpeg on the RTSP camera fixture."""
from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults.scenarios import processes_under
from tests.fleet.test_fleet import TTL, fleet_config, live, running, start_all
from tests.integration.harness import alive, wait_for

pytestmark = pytest.mark.integration


def alive_under(agent) -> set[str]:
    """Streams with a live (not zombie) process writing under ``agent``'s recordings."""
    return {sid for sid, pids in processes_under(agent.recordings).items() if any(alive(p) for p in pids)}


@pytest.mark.slow
def test_a_frozen_agent_stops_recording_before_another_node_takes_over(etcd, rtsp_camera, agent_factory):
    """Issue 16 item 13: SIGSTOP of agent a alone; duplicate-owner seconds (both nodes'
    FFmpeg alive for the same camera) stay within lease_ttl + 2 s; on SIGCONT a restarts
    nothing it no longer owns."""
    streams = {sid: {"url": rtsp_camera.url(sid), "placement": {"prefer": ["a"]}} for sid in ("cam1", "cam2")}
    agents = {n: agent_factory(fleet_config(etcd.endpoints, n, streams), name=n) for n in ("a", "b")}
    start_all(list(agents.values()))
    a, b = agents["a"], agents["b"]
    wait_for(lambda: live(a) == set(streams) and running(b) == set(), 45, "both cameras live on a (only)")
    a.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    both = dict.fromkeys(streams, 0.0)
    a_gone_at: float | None = None
    try:
        last = time.monotonic()
        deadline = stopped_at + 4 * TTL + 20
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now, on_a, on_b = time.monotonic(), alive_under(a), alive_under(b)
            for sid in streams:
                if sid in on_a and sid in on_b:
                    both[sid] += now - last
            last = now
            if a_gone_at is None and not on_a:
                a_gone_at = now
            if a_gone_at is not None and on_b == set(streams):
                break
        wait_for(lambda: live(b) == set(streams), 20, "both cameras live on b while a is frozen")
    finally:
        a.signal(signal.SIGCONT)
    worst = max(both.values())
    print(f"\nSIGSTOP of one agent (lease_ttl {TTL:g}s): duplicate-owner seconds per camera "
          f"{', '.join(f'{s} {v:.2f}' for s, v in both.items())}; a's children gone "
          f"{(a_gone_at or float('nan')) - stopped_at:.2f}s after SIGSTOP")
    assert a_gone_at is not None, "a's FFmpegs kept running while a was frozen"
    assert worst <= TTL + 2, both
    assert a_gone_at - stopped_at <= TTL + 2
    # Resumed, a learns from etcd that b owns both and starts nothing.
    pids_b = b.pids()
    wait_for(lambda: a.snapshot()["fleet"]["etcd_up"] and a.snapshot()["fleet"]["owned"] == [], 20,
             "a back on etcd, owning nothing")
    end = time.monotonic() + 6
    while time.monotonic() < end:
        assert alive_under(a) == set(), "a restarted a camera it no longer owns"
        time.sleep(0.05)
    assert b.pids() == pids_b and live(b) == set(streams)
    assert "frozen" in a.log() and "stopped vouching" in a.log()
    fence_pid = a.snapshot()["fleet"]["fence_pid"]
    assert fence_pid and alive(fence_pid)  # the fence lives on for the next freeze


def test_the_fence_stops_only_the_groups_it_was_vouched_for_once_the_voucher_lapses():
    """The fence process alone (agent/fleet/fence_proc.py): renewed vouchers keep the children;
    a lapsed one stops the listed groups (TERM, then KILL), never an unlisted one."""
    import json
    import subprocess
    import sys

    from agent.fleet.fence import SCRIPT
    listed = subprocess.Popen(["sleep", "60"], start_new_session=True)
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    fence = subprocess.Popen([sys.executable, "-I", "-S", str(SCRIPT)], stdin=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
    assert fence.stdin is not None and fence.stderr is not None
    try:
        def vouch(seconds: float) -> None:
            line = {"until": time.monotonic() + seconds, "pgids": [listed.pid]}
            fence.stdin.write(json.dumps(line).encode() + b"\n")  # type: ignore[union-attr]
            fence.stdin.flush()  # type: ignore[union-attr]
        for _ in range(6):  # renewed in time: nothing happens
            vouch(0.5)
            time.sleep(0.2)
        assert listed.poll() is None
        lapsed_at = time.monotonic()
        wait_for(lambda: listed.poll() is not None, 5, "the listed group stopped")
        assert time.monotonic() - lapsed_at < 1.5 and listed.returncode == -signal.SIGTERM
        assert other.poll() is None and fence.poll() is None
        fence.stdin.close()
        assert fence.wait(5) == 0
        assert "stopped 1 process groups" in fence.stderr.read().decode()
    finally:
        for proc in (listed, other, fence):
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def _sleepers(n: int) -> list:
    import subprocess
    return [subprocess.Popen(["sleep", "60"], start_new_session=True) for _ in range(n)]


def _vouch_for(fence, seconds: float) -> None:
    """The agent's vouching loop (agent/fleet/node.py ``_vouch``) for ``seconds``."""
    from agent.fleet.fence import VOUCH_INTERVAL
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        fence.tick()
        time.sleep(VOUCH_INTERVAL)


@pytest.mark.slow
def test_a_stopped_fence_is_replaced_and_never_fires_on_stale_vouchers():
    """The fence process SIGSTOPped (an operator's mistake, a stray ``kill -STOP -g``) is
    noticed within lease_ttl and replaced, so the agent is guarded again.  And one whose input filled up
    while stopped (minutes of vouchers: the newest dropped) never wakes to fire on the stale ones,
    killing an awake agent's children."""
    from agent.fleet.fence import Fence
    children = _sleepers(2)
    fence = Fence(lambda: [c.pid for c in children], ttl=1.0)
    fence.start()
    try:
        _vouch_for(fence, 1.0)
        first = fence.pid
        assert first is not None
        os.kill(first, signal.SIGSTOP)
        _vouch_for(fence, 1.5)  # 1.5 lease_ttl
        assert fence.pid != first and not alive(first), "a stopped fence was not replaced"
        # Stop the new one and feed it as minutes of vouching would, until its input is full.
        second = fence.pid
        assert second is not None
        os.kill(second, signal.SIGSTOP)
        for _ in range(5000):
            fence.refresh()
            if fence.pid != second:
                break
        _vouch_for(fence, 1.5)  # the agent vouches on; every voucher the stopped fence holds is now stale
        if alive(second):
            os.kill(second, signal.SIGCONT)
        _vouch_for(fence, 2.5)
        assert all(c.poll() is None for c in children), "the fence fired on stale vouchers"
        assert fence.pid is not None and alive(fence.pid)
        fenced = fence.pid
        time.sleep(2.5)  # the agent stops vouching (frozen): the replacement fence still acts
        wait_for(lambda: all(c.poll() is not None for c in children), 5, "the new fence stopping the children")
        assert fence.pid == fenced
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait(5)
        fence.close()


@pytest.mark.slow
def test_a_stall_shorter_than_the_lease_etcd_granted_keeps_the_children(etcd, agent_factory):
    """lease_ttl 1 s, but etcd grants no lease shorter than 2 s (its minimum), so no node can
    take a stream over before 2 s.  The agent stalled for 1.4 s (SIGSTOP standing for an event loop
    blocked by heavy work) must find its children still running: stopping them is a gap and nothing else."""
    from tests.integration.harness import CHEAP
    streams = {f"s{i}": CHEAP for i in range(2)}
    a = agent_factory(fleet_config(etcd.endpoints, "a", streams, ttl=1.0), name="a").start()
    wait_for(lambda: live(a) == set(streams), 30, "a running both streams")
    time.sleep(1.0)
    before = {sid: s["pid"] for sid, s in a.streams().items()}
    assert a.proc is not None
    os.kill(a.proc.pid, signal.SIGSTOP)
    time.sleep(1.4)
    os.kill(a.proc.pid, signal.SIGCONT)
    time.sleep(3.0)
    after = {sid: s["pid"] for sid, s in a.streams().items()}
    assert after == before and all(alive(p) for p in after.values()), a.log()[-2000:]
    assert "frozen" not in a.log()


@pytest.mark.slow
def test_a_killed_or_stopped_fence_of_a_running_agent_is_replaced_and_guards_again(etcd, agent_factory):
    """The fence SIGKILLed, then the new one SIGSTOPped, under a running agent: each is replaced
    (the snapshot names the live fence, not the dead one), the streams run on untouched, and a freeze of
    the agent afterwards is still fenced."""
    from tests.integration.harness import CHEAP
    streams = {f"s{i}": CHEAP for i in range(2)}
    a = agent_factory(fleet_config(etcd.endpoints, "a", streams), name="a").start()
    wait_for(lambda: live(a) == set(streams), 30, "a running both streams")
    before = {sid: s["pid"] for sid, s in a.streams().items()}
    for sig in (signal.SIGKILL, signal.SIGSTOP):
        fence = a.snapshot()["fleet"]["fence_pid"]
        os.kill(fence, sig)
        wait_for(lambda old=fence: a.snapshot()["fleet"]["fence_pid"] not in (None, old), 10,
                 f"the fence replaced ({sig!r})")
        assert alive(a.snapshot()["fleet"]["fence_pid"]) and not alive(fence)
    assert {sid: s["pid"] for sid, s in a.streams().items()} == before
    assert a.proc is not None
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: not any(alive(p) for p in before.values()), TTL + 5, "the new fence stopping the children")
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    wait_for(lambda: live(a) == set(streams), 30, "a running both streams again")
