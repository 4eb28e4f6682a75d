"""Blocking calls run in a thread with a timeout, so that a hung file system cannot stall the event loop."""
from __future__ import annotations

import asyncio
import os
import threading

import pytest

from agent.blocking import in_thread


async def test_a_call_that_hangs_on_a_fifo_times_out_and_leaves_the_loop_free(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    with pytest.raises(TimeoutError):
        await in_thread(lambda: open(fifo).read(), timeout=0.5, name="test-fifo")
    ticker.cancel()
    assert ticks > 10  # the event loop kept running meanwhile
    stuck = [t for t in threading.enumerate() if t.name == "test-fifo"]
    assert stuck and stuck[0].daemon  # abandoned, and it cannot hold up the exit
    with open(fifo, "w"):
        pass  # release the thread
