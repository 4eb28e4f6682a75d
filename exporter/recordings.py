"""Recording figures for /v2/health/recordings and the vas_recording_* metrics.

The agent's retention index, when its snapshot carries one, is the source
(``recording.segment_count``, ``total_bytes``, ``oldest_segment_at``,
``newest_segment_at``).
Otherwise the exporter walks the stream directories itself, in a thread,
once per SCAN_INTERVAL, never at request time.  A segment is a regular file
with a media extension anywhere under ``{root}/{stream}``; symlinks are not
followed.
"""
from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.diskuse import DiskUse, of_statvfs

MEDIA_EXTENSIONS = (".ts", ".m4s", ".mp4", ".mkv")
SCAN_INTERVAL = 60.0
#: A walk stops counting a stream after this many entries (the figure is then a floor).
SCAN_LIMIT = 500_000


Figures = tuple[int, int, "float | None", "float | None"]


def scan_stream(directory: Path) -> Figures:
    """``(segments, bytes, oldest mtime, newest mtime)`` under ``directory``, without following symlinks."""
    count = total = seen = 0
    oldest: float | None = None
    newest: float | None = None
    stack = [str(directory)]
    while stack and seen < SCAN_LIMIT:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    seen += 1
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
                    elif stat.S_ISREG(st.st_mode) and entry.name.endswith(MEDIA_EXTENSIONS):
                        count, total = count + 1, total + st.st_size
                        oldest = st.st_mtime if oldest is None else min(oldest, st.st_mtime)
                        newest = st.st_mtime if newest is None else max(newest, st.st_mtime)
        except OSError:
            continue  # vanished or unreadable: the next pass sees it again
    return count, total, oldest, newest


def root_of(view: Any) -> Path | None:
    """The recordings root the snapshot names (None without a readable snapshot)."""
    root = ((getattr(view, "data", None) or {}).get("config") or {}).get("recordings_root")
    return Path(root) if isinstance(root, str) and root else None


class RecordingStats:
    """Per-stream figures and the filesystem's free space."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self.version = 0
        self._scanned: dict[str, Figures] = {}

    def filesystem(self, view: Any) -> DiskUse | None:
        """The filesystem holding the recordings root, from the first snapshot that names the
        root on (the last root known is kept while the snapshot is unreadable, so the gauges
        never come and go); a root not created yet is judged on the filesystem it will be on."""
        self.root = root_of(view) or self.root
        if self.root is None:
            return None
        path = self.root
        while not path.is_dir() and path.parent != path:
            path = path.parent
        try:
            return of_statvfs(os.statvfs(path))
        except OSError:
            return None

    def per_stream(self, streams: list[dict[str, Any]]) -> dict[str, Figures]:
        """``(segments, bytes, oldest mtime, newest mtime)`` of each stream with figures: the
        agent's index when the snapshot has one, else the last fallback scan."""
        out = {}
        for s in streams:
            rec = s.get("recording") or {}
            # A stream with recording off keeps its footage until retention takes it, but its
            # newest segment is no news: without this, VasRecordingStopped would take the choice
            # for a failure.
            recording = rec.get("enabled") is not False
            if rec.get("segment_count") is not None:  # the agent's index (the shape takes null for a number)
                out[s["id"]] = (rec["segment_count"], rec.get("total_bytes") or 0, rec.get("oldest_segment_at"),
                                rec.get("newest_segment_at") if recording else None)
            elif s["id"] in self._scanned:
                scanned = self._scanned[s["id"]]
                out[s["id"]] = scanned if recording else (*scanned[:3], None)
        return out

    async def run(self, read_view: Callable[[], Any], then: Callable[[], None] = lambda: None) -> None:
        """Keep the fallback figures fresh (a background task of the app); ``then`` runs after
        each scan (the metrics' render, so that no scrape pays for it)."""
        while True:
            view = read_view()
            self.root = root_of(view) or self.root
            ids = [s["id"] for s in view.streams if (s.get("recording") or {}).get("segment_count") is None]
            if self.root is not None and ids:
                self._scanned = await asyncio.to_thread(_scan_all, self.root, ids)
                self.version += 1
                then()
            await asyncio.sleep(SCAN_INTERVAL if ids else 5.0)


def _scan_all(root: Path, ids: list[str]) -> dict[str, Figures]:
    return {sid: scan_stream(root / sid) for sid in ids}
