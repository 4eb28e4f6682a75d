"""Counting the event loop's turns (its selector's ``select`` calls): costs measured in wakeups
rather than in time, which a loaded machine does not move."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

Select = Callable[..., object]


@contextlib.contextmanager
def _select_wrapped(wrap: Callable[[Select], Select]) -> Iterator[None]:
    """While inside, the running loop's selector calls ``wrap(its select)`` instead."""
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    real_select = selector.select
    selector.select = wrap(real_select)
    try:
        yield
    finally:
        selector.select = real_select


@contextlib.contextmanager
def counting_turns(turns: list[int]) -> Iterator[list[int]]:
    """While inside, each turn of the running loop adds 1 to ``turns[0]``."""
    def wrap(real_select: Select) -> Select:
        def counting_select(timeout: float | None = None) -> object:
            turns[0] += 1
            return real_select(timeout)
        return counting_select

    with _select_wrapped(wrap):
        yield turns


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
    found, left = TurnCpu(), [time.thread_time()]

    def wrap(real_select: Select) -> Select:
        def timed_select(timeout: float | None = None) -> object:
            turn = time.thread_time() - left[0]
            found.turns += 1
            found.spent += turn
            found.longest = max(found.longest, turn)
            try:
                return real_select(timeout)
            finally:
                left[0] = time.thread_time()
        return timed_select

    with _select_wrapped(wrap):
        yield found
