"""The respawn path's cost (issue 21 item 4), counted rather than timed: the turns of the event
loop between a child's death and its replacement's spawn, each one added to every restart."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from agent.config.model import RecordingConfig, RestartPolicy, StreamConfig
from agent.supervise.stream import Host, Stream

from .loopturns import counting_turns

pytestmark = pytest.mark.integration

#: The smallest backoff the config accepts, no jitter: one timer between the exit and the spawn.
FAST = RestartPolicy(initial_delay=0.001, multiplier=2, max_delay=0.001, jitter=0, stable_after=0)
#: Loop turns a respawn may take: the exit (up to three: the two pipes' EOF and the pidfd may each
#: come in a turn of its own), then the supervising task's wakeup, the backoff's timer, and the
#: task's wakeup that spawns: 4-6 measured, and two to spare (a timer's early wakeup under load).
#: Before the exit's wakeup went through an Event and the backoff through asyncio.timeout: 11-13.
MAX_TURNS = 8


def _stream(tmp_path, policy: RestartPolicy, *, on_change, spawned) -> Stream:
    """One started stream of ``sleep 600`` restarted by ``policy`` (no recording, no stall watch)."""
    host = Host(ffmpeg="ffmpeg", recordings_root=tmp_path, secrets=frozenset(), on_change=on_change, spawned=spawned)
    cfg = StreamConfig(id="cam", url="rtsp://cam/", command=("/bin/sh", "-c", "exec sleep 600"), restart=policy,
                       stall_timeout=0, stop_timeout=2, recording=RecordingConfig(enabled=False))
    stream = Stream(cfg, host)
    stream.start()
    return stream


async def test_a_killed_child_is_replaced_within_a_few_turns_of_the_loop(tmp_path):
    turns, spawns = [0], []
    spawned = asyncio.Event()

    def on_spawn() -> None:
        spawns.append(turns[0])
        spawned.set()

    stream = _stream(tmp_path, FAST, on_change=lambda _: None, spawned=on_spawn)
    try:
        await asyncio.wait_for(spawned.wait(), 5)
        used = []
        with counting_turns(turns):
            for _ in range(5):
                spawned.clear()
                await asyncio.sleep(0.05)  # nothing else pending: the turns counted are the respawn's
                start = turns[0]
                os.killpg(stream.pid, signal.SIGKILL)
                async with asyncio.timeout(5):  # not wait_for: its own task would add a turn
                    await spawned.wait()
                used.append(spawns[-1] - start)
        assert max(used) <= MAX_TURNS, f"loop turns from a kill to the next spawn: {used}"
    finally:
        await asyncio.wait_for(stream.close(), 5)


async def test_the_restart_delay_counts_from_the_exit_not_from_after_the_work_that_follows_it(tmp_path):
    # The loop's work after an exit (the failure's log line, the snapshot's state change) is done
    # inside the restart delay, not added to it: here that work takes 0.9 s of a 1 s delay.
    delay, busy = 1.0, 0.9
    spawned = asyncio.Event()
    stream: Stream | None = None
    blocked: list[bool] = []

    def on_change(state_changed: bool) -> None:
        if state_changed and stream is not None and stream.last_exit is not None and not blocked:
            blocked.append(True)
            time.sleep(busy)  # the loop busy right after the exit, as a slow log handler would make it

    policy = RestartPolicy(initial_delay=delay, multiplier=2, max_delay=delay, jitter=0, stable_after=0)
    stream = _stream(tmp_path, policy, on_change=on_change, spawned=spawned.set)
    try:
        await asyncio.wait_for(spawned.wait(), 5)
        spawned.clear()
        t0 = time.monotonic()
        os.killpg(stream.pid, signal.SIGKILL)
        await asyncio.wait_for(spawned.wait(), 5)
        took = time.monotonic() - t0
        assert blocked, "the work after the exit never ran"
        # From the exit: about `delay`.  From after the work: delay + busy (1.9 s) or more.
        assert delay <= took < delay + busy * 2 / 3, f"respawned {took:.3f}s after the kill"
    finally:
        await asyncio.wait_for(stream.close(), 5)
