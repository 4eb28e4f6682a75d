"""The agent's snapshot as the exporter sees it: re-read only when the file was replaced.

The agent replaces ``state.json`` atomically (a new inode each time) and
touches it every second; so one ``stat`` per request tells both whether the
content changed (inode, size) and how fresh the agent is (mtime).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class View:
    """The snapshot at one moment: ``data`` None when there is none (``error`` says why)."""

    data: dict[str, Any] | None
    age: float | None
    version: int
    error: str | None = None

    def fresh(self, stale_after: float) -> bool:
        return self.age is not None and self.age <= stale_after

    @property
    def streams(self) -> list[dict[str, Any]]:
        return (self.data or {}).get("streams") or []


class SnapshotSource:
    """Reads ``path`` when it changed; ``version`` grows with every new content."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int, int] | None = None
        self._data: dict[str, Any] | None = None
        self._error: str | None = None
        self.version = 0

    def read(self) -> View:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self._key is not None or self._error is None:
                self._key, self._data, self.version = None, None, self.version + 1
            self._error = f"no snapshot at {self.path}: {exc.strerror}"
            return View(None, None, self.version, self._error)
        key = (st.st_dev, st.st_ino, st.st_size)
        if key != self._key:
            self._load(key)
        return View(self._data, max(0.0, time.time() - st.st_mtime), self.version, self._error)

    def _load(self, key: tuple[int, int, int]) -> None:
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            self._data, self._error = data, None
        except (OSError, ValueError) as exc:
            self._data, self._error = None, f"cannot read snapshot {self.path}: {exc}"
        self._key, self.version = key, self.version + 1
