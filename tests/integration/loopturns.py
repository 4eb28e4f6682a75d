"""Counting the event loop's turns (its selector's ``select`` calls): costs measured in wakeups
rather than in time, which a loaded machine does not move."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator


@contextlib.contextmanager
def counting_turns(turns: list[int]) -> Iterator[list[int]]:
    """While inside, each turn of the running loop adds 1 to ``turns[0]``."""
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    real_select = selector.select

    def counting_select(timeout: float | None = None) -> object:
        turns[0] += 1
        return real_select(timeout)

    selector.select = counting_select
    try:
        yield turns
    finally:
        selector.select = real_select


class TurnCpu:
    """The CPU the running loop's thread spent in each turn outside its selector's ``select``:
    a piece of work's cost, which a loaded host stretches in time but not in CPU."""

    def __init__(self) -> None:
        self.longest = 0.0  # s of thread CPU, the longest turn
        self.turns = 0
        self.spent = 0.0  # s of thread CPU in all turns


@contextlib.contextmanager
def cpu_per_turn() -> Iterator[TurnCpu]:
    """While inside, each turn of the running loop is counted in the :class:`TurnCpu` yielded."""
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    real_select = selector.select
    found, left = TurnCpu(), [time.thread_time()]

    def timed_select(timeout: float | None = None) -> object:
        turn = time.thread_time() - left[0]
        found.turns += 1
        found.spent += turn
        found.longest = max(found.longest, turn)
        try:
            return real_select(timeout)
        finally:
            left[0] = time.thread_time()

    selector.select = timed_select
    try:
        yield found
    finally:
        selector.select = real_select
