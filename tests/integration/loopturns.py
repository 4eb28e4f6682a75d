"""Counting the event loop's turns (its selector's ``select`` calls): costs measured in wakeups
rather than in time, which a loaded machine does not move."""
from __future__ import annotations

import asyncio
import contextlib
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
