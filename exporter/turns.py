"""Long pure work done a piece per turn of the event loop, not in a thread.

The exporter's event loop answers /livez and /metrics.  Work in a thread beside it (a month's
playlist, 100,000 segments) takes the GIL from it, and on a loaded host each time the loop needs
the GIL back costs it the switch interval plus a wait for the CPU: a /livez took up to half a
second while a playlist was built.  A generator that yields between pieces of a few milliseconds,
run here, lets the loop answer between two pieces instead (``agent.client.at_once`` runs
the same work without pausing, off the loop).
"""
from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")
#: Work that yields (None) between its pieces and returns its result.
Steps = Generator[None, None, T]


async def in_turns(steps: Steps[T]) -> T:
    """Run ``steps`` to its end, a piece per turn of the event loop; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        await asyncio.sleep(0)

