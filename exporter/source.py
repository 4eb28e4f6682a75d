"""The agent's snapshot as the exporter sees it: re-read only when the file was replaced.

The agent replaces ``state.json`` atomically (a new inode each time) and
touches it every second; so one ``stat`` per request tells both whether the
content changed (inode, size) and how fresh the agent is (mtime).  What the
handlers get is presented by agent/snapshot_view.py: a file of the wrong shape
is unreadable (``data`` None, ``unreadable`` True), and a stale one claims
nothing about the present (every stream ``unknown``, ``stale: true``).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.snapshot_view import mark_stale, shape_error

#: The exporter's default for ``exporter.stale_after``.
STALE_AFTER = 5.0


@dataclass(frozen=True)
class View:
    """The snapshot at one moment: ``data`` None when there is none (``error`` says why)."""

    data: dict[str, Any] | None
    age: float | None
    version: int
    error: str | None = None
    #: Older than the stale limit: ``data`` is the agent's last word, marked as such.
    stale: bool = False
    #: A file is there but its content is not a snapshot (garbage, wrong types).
    unreadable: bool = False

    def fresh(self, stale_after: float) -> bool:
        """The agent proved it was alive within ``stale_after`` seconds."""
        return self.age is not None and self.age <= stale_after

    @property
    def streams(self) -> list[dict[str, Any]]:
        """The streams as presented (an empty list without data)."""
        return (self.data or {}).get("streams") or []


#: How often the app notes the snapshot's mtime (see :meth:`SnapshotSource.observe`).
OBSERVE_EVERY = 0.5


def judged_age(wall: float, unchanged: float) -> float:
    """The snapshot's age from its mtime (``wall``: now - mtime) and from how long this
    reader has seen that mtime unchanged (``unchanged``, monotonic).

    The agent touches the file every second, so an mtime that stays put means the agent
    is not running, whatever the wall clock says: a backward step leaves a frozen
    agent's snapshot dated in the future (``wall`` < 0), which must not read as fresh.
    """
    return max(wall, unchanged, 0.0)


class SnapshotSource:
    """Reads ``path`` when it changed; ``version`` grows with every new content."""

    def __init__(self, path: Path, stale_after: float = STALE_AFTER) -> None:
        self.path, self.stale_after = path, stale_after
        self._key: tuple[int, int, int] | None = None
        self._data: dict[str, Any] | None = None
        self._error: str | None = None
        self._unreadable = False
        self.version = 0
        self._seen: tuple[int, float] = (-1, 0.0)  # (mtime_ns, monotonic time it was first seen)

    def read(self) -> View:
        """The snapshot now: one ``stat``; parsed and marked only when something changed.

        ``error`` goes into answers anyone may read (``/readyz`` never needs a token): it says
        what is wrong without the snapshot's path, which would give away the runtime directory
        (the path is in the exporter's start line and in ``vas-exporter --check``)."""
        age = self.age()
        if age is None:
            return View(None, None, self.version, self._error)
        if self._data is not None and age > self.stale_after:
            # Marked per read (a stale agent is the exception): the age in it is the current one.
            return View(mark_stale(self._data, age), age, self.version, self._error, stale=True)
        return View(self._data, age, self.version, self._error, unreadable=self._unreadable)

    def age(self) -> float | None:
        """The snapshot's age now (None without a file), re-reading it first if it changed
        (``version`` then grows): what :meth:`read` does, without presenting the content."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self._key is not None or self._error is None:
                self._key, self._data, self.version = None, None, self.version + 1
            why = exc.strerror or type(exc).__name__
            self._error, self._unreadable = f"no agent snapshot (state.json): {why}", False
            return None
        key = (st.st_dev, st.st_ino, st.st_size)
        if key != self._key:
            self._load(key)
        return judged_age(time.time() - st.st_mtime, self._unchanged_for(st.st_mtime_ns))

    def observe(self) -> None:
        """Note the file's mtime (one ``stat``), so that one which stays put is seen to (the
        app calls this every OBSERVE_EVERY seconds; requests may come far apart)."""
        try:
            self._unchanged_for(os.stat(self.path).st_mtime_ns)
        except OSError:
            pass

    def _unchanged_for(self, mtime_ns: int) -> float:
        now = time.monotonic()
        if mtime_ns != self._seen[0]:
            self._seen = (mtime_ns, now)
        return now - self._seen[1]

    def _load(self, key: tuple[int, int, int]) -> None:
        try:
            with open(self.path, "rb") as fh:
                data = json.loads(fh.read().decode("utf-8"))
            problem = shape_error(data)
            if problem:
                raise ValueError(problem)
            self._data, self._error, self._unreadable = data, None, False
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            self._data, self._error, self._unreadable = None, f"cannot read the agent snapshot: {why}", False
        except (ValueError, RecursionError, TypeError, AttributeError) as exc:  # UnicodeDecodeError: a ValueError
            self._data, self._unreadable = None, True
            self._error = f"agent state unreadable: {str(exc)[:200]}"
        self._key, self.version = key, self.version + 1
