"""Stall detection: a process that is alive but makes no progress is a failure."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from .ffmpeg import Progress

if TYPE_CHECKING:
    from .stream import Stream

log = logging.getLogger("vas.stream")


class StallWatch:
    """Kills the child when progress stops advancing for ``stall_timeout``.

    One timer per child that re-arms itself lazily: progress only records a
    timestamp, so a busy stream costs no timer churn.
    """

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.fired = False
        self.report: Progress | None = None  # last report that advanced, this run
        self._last = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        timeout = self.stream.cfg.stall_timeout
        if timeout > 0:
            self._last = time.monotonic()
            self._schedule(self._last + timeout)

    def reconfigure(self) -> None:
        """Follow a changed ``stall_timeout`` on the running process (armed, moved or off)."""
        was_armed = self._handle is not None
        self.cancel()
        timeout = self.stream.cfg.stall_timeout
        if timeout > 0 and not self.fired:
            if not was_armed:  # was off: a stream quiet until now gets a full timeout
                self._last = time.monotonic()
            self._schedule(self._last + timeout)

    def touch(self) -> None:
        self._last = time.monotonic()

    def cancel(self) -> None:
        if self._handle:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()), self._check)

    def _check(self) -> None:
        self._handle = None
        timeout = self.stream.cfg.stall_timeout
        if timeout <= 0:
            return
        deadline = self._last + timeout
        if time.monotonic() < deadline:
            self._schedule(deadline)
            return
        child = self.stream.child
        if child is not None:
            log.warning("stalled: %s (no progress for %gs), killing pid %d",
                        self.stream.cfg.id, timeout, child.pid)
            self.fired = True
            child.kill()
