"""What the free-space floor did, said loudly: a WARNING per pass, counts, unreachable floors.

Deleting for free space is the one policy the operator does not write per stream, so
every such pass is a WARNING naming the filesystem, its free space, the floor, the
bytes freed and why; the counts feed ``vas_retention_disk_pressure_passes_total``.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from agent.recordings.delete import Outcome
from agent.recordings.disk import SAFETY_MARGIN, Filesystem, emergency_free, floor_problem, size_text

log = logging.getLogger("vas.retention")
#: Why a filesystem had to be relieved (bounded metric label values).
PRESSURE_REASONS = ("floor", "emergency")
#: "Below the floor but nothing may go" is said at most this often per filesystem.
BLOCKED_LOG_INTERVAL = 600.0


class Pressure:
    """Counts and reports free-space passes (one per retention service)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.passes = dict.fromkeys(PRESSURE_REASONS, 0)
        self.filesystems: list[Filesystem] = []
        self.last: dict[str, Any] | None = None
        self._blocked_said: dict[int, float] = {}
        self._warned: set[tuple[int, int]] = set()

    def record(self, fs: Filesystem, outcome: Outcome) -> None:
        """One filesystem's pass is done: a WARNING with what it freed and why."""
        reason = "emergency" if fs.emergency else "floor"
        why = (f"about to be full (less than {size_text(emergency_free(fs.total))} free): segments younger "
               f"than {SAFETY_MARGIN / 3600:g}h may go" if fs.emergency else
               f"below recordings.min_free ({size_text(fs.floor)}); segments younger than "
               f"{SAFETY_MARGIN / 3600:g}h are kept")
        if not outcome.deleted:
            now = time.monotonic()
            if now - self._blocked_said.get(fs.dev, -BLOCKED_LOG_INTERVAL) >= BLOCKED_LOG_INTERVAL:
                self._blocked_said[fs.dev] = now
                log.warning("retention (disk): %s has %s free, %s: nothing may be deleted there; "
                            "free space by other means", fs.path, size_text(fs.free), why)
            return
        self.passes[reason] += 1
        streams = sorted({c.stream for c in outcome.deleted})
        self.last = {"at": time.time(), "reason": reason, "path": fs.path, "free_bytes": fs.free,
                     "floor_bytes": fs.floor, "deleted_segments": len(outcome.deleted),
                     "deleted_bytes": outcome.bytes, "streams": streams}
        goal = 2 * emergency_free(fs.total) if fs.emergency else fs.target
        log.warning("retention (disk): %s had %s free, %s: deleted %d segments (%s) of %s to reach %s free",
                    fs.path, size_text(fs.free), why, len(outcome.deleted), size_text(outcome.bytes),
                    ", ".join(streams), size_text(goal))

    def check_floors(self, rec: Any) -> list[str]:
        """Warnings for floors no measured filesystem can reach; logged once per filesystem and size."""
        out = []
        for fs in self.filesystems:
            problem = floor_problem(rec, fs.total, fs.path, fs.usable)
            if problem is None:
                continue
            out.append(problem)
            if (fs.dev, fs.total) not in self._warned:
                self._warned.add((fs.dev, fs.total))
                log.warning("retention: %s", problem)
        return out

    def view(self) -> dict[str, Any]:
        """The snapshot's ``recordings`` entries about free space."""
        return {"filesystems": [fs.view() for fs in self.filesystems],
                "disk_pressure": {"passes": dict(self.passes), "last": self.last},
                "floor_unreachable": sum(fs.unreachable for fs in self.filesystems)}
