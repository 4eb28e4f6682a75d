"""Steps of the wall clock, so that ages measured on file mtimes survive them.

Retention compares file mtimes (wall clock) with the wall clock.  When NTP or an
operator steps the clock forward by hours, every segment written before the step
would suddenly look hours older and expire early.  :class:`ClockSteps` notices a
step (the wall clock moved against the monotonic one) and :meth:`ClockSteps.shift`
moves an mtime written before a forward step into the new timebase, so its age
stays true.  A backward step is only recorded: files written before it look
younger and are kept longer by at most the step, never deleted early.
Freshness (agent/recordings/delete.py ``is_fresh``) never rests on this estimate alone.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("vas.retention")
#: A wall/monotonic disagreement at least this large is a step, not a slew.
STEP_THRESHOLD = 5.0
#: Steps remembered (the oldest are dropped: their files have long expired).
MAX_STEPS = 64


@dataclass(frozen=True)
class Step:
    """The wall clock read ``before`` (old timebase) and then jumped by ``delta`` seconds."""

    before: float
    delta: float


class ClockSteps:
    """Watches the wall clock against the monotonic one (call :meth:`check` before using ages)."""

    def __init__(self, wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic,
                 threshold: float = STEP_THRESHOLD) -> None:
        self._wall, self._mono, self._threshold = wall, mono, threshold
        self._offset = wall() - mono()
        self.steps: list[Step] = []

    def check(self) -> Step | None:
        """Record a step since the last check (slews are followed silently)."""
        wall, mono = self._wall(), self._mono()
        offset = wall - mono
        delta, before = offset - self._offset, mono + self._offset
        self._offset = offset
        if abs(delta) < self._threshold:
            return None
        step = Step(before, delta)
        self.steps = [*self.steps[-(MAX_STEPS - 1):], step]
        log.warning("wall clock stepped %s by %s: segment ages are measured across the step",
                    "forward" if delta > 0 else "back", _span(abs(delta)))
        return step

    def shift(self, mtime: float) -> float:
        """``mtime`` in today's timebase: a file dated before the end of a forward step's
        skipped span was written in the old timebase (after a real step no clock reads
        inside the span; a process that alone sees the step, e.g. under libfaketime,
        still has the kernel date its files there)."""
        return mtime + sum(s.delta for s in self.steps if s.delta > 0 and mtime < s.before + s.delta)


def _span(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def same(mtime: float) -> float:
    """The identity shift: no clock steps known."""
    return mtime
