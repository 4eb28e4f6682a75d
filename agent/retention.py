"""Recording cleanup by age: a pure plan plus a careful executor.

Deletes only regular files named like the agent's own segments
(``{id}_{stamp}_{seq}.ts``), directly inside ``{root}/{id}``, never through a
symlink, never the newest segment of a stream (FFmpeg's live playlist still
points at it).  The event-driven retention with size limits and a free-space
floor builds on these pieces (retention issue).
"""
from __future__ import annotations

import logging
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("vas.retention")
# Six digits or more: a run of 1 s segments passes 999999 after 11.6 days.
_SEGMENT = re.compile(r"^(?P<id>.+)_(?P<stamp>\d{8}T\d{6}\d{3}Z)_(?P<seq>\d{6,})\.ts$")
#: Deletion errors are logged at most this often (they are all counted).
ERROR_LOG_INTERVAL = 60.0
_last_error_log = [0.0]


@dataclass(frozen=True, order=True)
class Segment:
    """One finished recording segment (ordered by name = by start, then sequence)."""

    sort_key: tuple[str, int]
    name: str
    mtime: float
    size: int


def segment_key(stream_id: str, name: str) -> tuple[str, int] | None:
    """``(stamp, seq)`` when ``name`` is one of ``stream_id``'s segments, else None."""
    match = _SEGMENT.fullmatch(name)
    if not match or match["id"] != stream_id:
        return None
    return match["stamp"], int(match["seq"])  # numeric: 1000000 comes after 999999


def plan_age_cleanup(segments: list[Segment], *, now: float, max_age: float) -> list[Segment]:
    """The segments older than ``max_age``, oldest first, never the newest one.

    ``max_age`` 0 keeps everything.
    """
    if max_age <= 0 or len(segments) < 2:
        return []
    ordered = sorted(segments)
    return [s for s in ordered[:-1] if now - s.mtime > max_age]


class UnsafeDirectory(Exception):
    """The stream's recording directory is a symlink or not a directory."""


def _open_stream_dir(root: Path, stream_id: str) -> int | None:
    try:
        return os.open(root / stream_id, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnsafeDirectory(f"{root / stream_id}: not a plain directory ({exc.strerror}); nothing deleted") from None


def scan(dir_fd: int, stream_id: str) -> list[Segment]:
    """The stream's segments in an open directory: regular files with segment names only."""
    found = []
    for entry in os.scandir(dir_fd):
        key = segment_key(stream_id, entry.name)
        if key is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # deleted meanwhile (a concurrent cleanup, FFmpeg's rename)
        if stat.S_ISREG(st.st_mode):
            found.append(Segment(key, entry.name, st.st_mtime, st.st_size))
    return found


@dataclass
class Outcome:
    """What a cleanup of one stream did: deleted segments and per-file errors."""

    deleted: list[Segment] = field(default_factory=list)
    errors: int = 0


def cleanup_stream(root: Path, stream_id: str, *, now: float, max_age: float,
                   dry_run: bool = False) -> Outcome:
    """Delete (or with ``dry_run`` only list) the segments ``plan_age_cleanup`` picks.

    Errors are per file: counted, logged (rate-limited) and skipped, so one
    undeletable file never stops the rest (nor the other streams).
    """
    outcome = Outcome()
    fd = _open_stream_dir(root, stream_id)
    if fd is None:
        return outcome
    try:
        doomed = plan_age_cleanup(scan(fd, stream_id), now=now, max_age=max_age)
        if dry_run:
            outcome.deleted = doomed
            return outcome
        for seg in doomed:
            try:
                # Relative to the directory we opened without following links: a
                # directory swapped for a symlink meanwhile cannot redirect this.
                os.unlink(seg.name, dir_fd=fd)
                outcome.deleted.append(seg)
            except FileNotFoundError:
                pass  # someone else deleted it: not ours to count
            except OSError as exc:
                outcome.errors += 1
                _log_error(f"cannot delete {root / stream_id / seg.name}: {exc.strerror}")
        return outcome
    finally:
        os.close(fd)


def _log_error(message: str) -> None:
    now = time.monotonic()
    if now - _last_error_log[0] >= ERROR_LOG_INTERVAL:
        _last_error_log[0] = now
        log.error("cleanup: %s (further errors counted, logged at most once a minute)", message)
