"""Retention's pure parts and its careful executor: the only code that deletes data.

A *segment* is a regular file (checked with lstat) whose name ends in ``.ts``,
``.m4s``, ``.mp4`` or ``.mkv``, anywhere under ``{root}/{stream_id}/`` (verbatim
commands and older installs choose their own names and date folders).  Never a
playlist, FFmpeg's ``.tmp`` file, a symlink or anything reached through one, a
file outside ``root``, or the file being written (anything dated in the future
or modified in the last ``RECENT_GRACE`` seconds, and the newest segment of a
running stream).

Planners are pure: given candidates oldest first and a policy, which go, in
which order.  :func:`delete_segments` executes a plan through directory file
descriptors opened with ``O_NOFOLLOW`` and ``unlink(dir_fd=)``, so a directory
swapped for a symlink meanwhile cannot redirect a deletion.
"""
from __future__ import annotations

import heapq
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.recordings.dirfd import STRICT_EVERY, Placement, open_below, open_folder
from agent.recordings.wallclock import same

__all__ = ["STRICT_EVERY", "Placement", "open_below"]  # re-exported: callers import them from here

log = logging.getLogger("vas.retention")
SEGMENT_EXTENSIONS = (".ts", ".m4s", ".mp4", ".mkv")
#: A file modified this recently may still be written: never deleted.
RECENT_GRACE = 5.0
#: A segment dated more than this after now is a clock glitch's: no policy deletes it before
#: its date (:func:`is_fresh`), so a size cap does not count it and retention reports it.
FUTURE_AHEAD = 60.0
#: Deletion errors are logged at most this often (they are all counted).
ERROR_LOG_INTERVAL = 60.0
REASONS = ("age", "size", "disk", "manual", "orphan")
_DIGITS = re.compile(r"(\d+)")
_last_error_log = [-ERROR_LOG_INTERVAL]


def is_segment_name(name: str) -> bool:
    """True for a media file name (``x.ts.tmp`` and ``index.m3u8`` are not)."""
    return name.endswith(SEGMENT_EXTENSIONS) and not name.startswith(".")


def natural_key(name: str) -> tuple:
    """Orders ``..._999999.ts`` before ``..._1000000.ts`` (numbers compare as numbers)."""
    parts = _DIGITS.split(name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


@dataclass(frozen=True, order=True)
class Candidate:
    """One indexed segment, ordered oldest first (mtime, then natural name order)."""

    mtime: float
    key: tuple
    stream: str = field(compare=False)
    dir: str = field(compare=False)  # relative to the stream's directory, "" for itself
    name: str = field(compare=False)
    size: int = field(compare=False)

    @property
    def rel(self) -> str:
        """The path relative to the stream's directory."""
        return f"{self.dir}/{self.name}" if self.dir else self.name


def candidate(stream: str, dir_rel: str, name: str, mtime: float, size: int) -> Candidate:
    """A :class:`Candidate` with its ordering key filled in."""
    return Candidate(mtime, natural_key(name), stream, dir_rel, name, size)


def is_fresh(mtime: float, now: float, shift: Callable[[float], float] = same) -> bool:
    """Modified in the last RECENT_GRACE seconds of ``now``, or dated in the future.

    The raw mtime decides first, whatever ``shift`` says: after a forward and a
    backward step, a shift estimate moves a file written a second ago by an hour
    into the future, and the guard must not depend on that estimate.  ``shift``
    can only add freshness (a file the agent alone sees dated in an old timebase,
    e.g. under libfaketime), never take it away.
    """
    return mtime > now - RECENT_GRACE or shift(mtime) > now - RECENT_GRACE


def keeper(*, now: float, newest: Candidate | None,
           shift: Callable[[float], float] = same) -> Callable[[Candidate], bool]:
    """The files no policy may take: recently modified ones and ``newest`` (being written)."""
    return lambda c: is_fresh(c.mtime, now, shift) or (newest is not None and c == newest and c.rel == newest.rel)


def plan_age(oldest_first: Iterable[Candidate], *, cutoff: float,
             keep: Callable[[Candidate], bool], shift: Callable[[float], float] = same) -> list[Candidate]:
    """Every segment modified before ``cutoff`` (oldest first), except kept ones.

    ``shift`` moves an mtime across wall-clock steps (agent/recordings/wallclock.py).
    """
    out = []
    for c in oldest_first:
        if shift(c.mtime) >= cutoff:
            break
        if not keep(c):
            out.append(c)
    return out


def plan_size(oldest_first: Iterable[Candidate], *, total: int, max_size: int,
              keep: Callable[[Candidate], bool]) -> list[Candidate]:
    """The oldest segments to delete until ``total`` is at most ``max_size`` (0: no cap)."""
    out: list[Any] = []
    excess = total - max_size
    if max_size <= 0:
        return out
    for c in oldest_first:
        if excess <= 0:
            break
        if not keep(c):
            out.append(c)
            excess -= c.size
    return out


def plan_free(streams: Iterable[Iterable[Candidate]], *, need: int,
              keep: Callable[[Candidate], bool]) -> list[Candidate]:
    """The oldest segments across all streams until ``need`` bytes are freed."""
    out: list[Any] = []
    freed = 0
    if need <= 0:
        return out
    for c in heapq.merge(*streams):
        if freed >= need:
            break
        if not keep(c):
            out.append(c)
            freed += c.size
    return out


@dataclass
class Outcome:
    """What executing a plan did: deleted segments, files already gone, per-file errors."""

    deleted: list[Candidate] = field(default_factory=list)
    gone: list[Candidate] = field(default_factory=list)
    errors: int = 0
    #: Modified or touched since indexed (as they are now): kept, the index learns their date.
    changed: list[Candidate] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(c.size for c in self.deleted)


class UnsafeDirectory(Exception):
    """A stream's recording directory is a symlink or not a directory."""


def delete_segments(root: str | os.PathLike[str], doomed: list[Candidate], *, now: float,
                    before_unlink: Callable[[Candidate], None] = lambda c: None,
                    shift: Callable[[float], float] = same) -> Outcome:
    """Delete ``doomed`` (from one or more streams) safely; errors are per file, never raised.

    Each file is checked again right before it goes (lstat through the open
    directory): only a regular segment not modified in the last RECENT_GRACE
    seconds is unlinked.  Directories emptied below a stream's own are removed.
    """
    outcome, fds = Outcome(), dict[Any, Any]()
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        outcome.errors += len(doomed)
        log_error(f"cannot open recordings root {root}: {exc.strerror}")
        return outcome
    placement = Placement(root_fd)
    try:
        for c in doomed:
            _delete_one(root_fd, fds, c, now, outcome, before_unlink, shift, placement)
        _remove_empty_dirs(root_fd, fds, {(c.stream, c.dir) for c in outcome.deleted if c.dir})
    finally:
        for fd in fds.values():
            if fd is not None:
                os.close(fd)
        os.close(root_fd)
    return outcome


def _dir_fd(root_fd: int, fds: dict, stream: str, dir_rel: str) -> int | None:
    key = (stream, dir_rel)
    if key not in fds:
        try:
            fds[key] = open_folder(root_fd, stream, dir_rel)
        except FileNotFoundError:
            fds[key] = None
        except OSError as exc:
            fds[key] = None
            log_error(f"{stream}/{dir_rel}: not a plain directory ({exc.strerror}); nothing deleted there")
    return fds[key]


def _delete_one(root_fd: int, fds: dict, c: Candidate, now: float, outcome: Outcome,
                before_unlink: Callable[[Candidate], None], shift: Callable[[float], float],
                placement: Placement) -> None:
    fd = _dir_fd(root_fd, fds, c.stream, c.dir)
    if fd is None:
        outcome.gone.append(c)
        return
    try:
        st = os.stat(c.name, dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or not is_segment_name(c.name):
            return  # replaced by a symlink or something else meanwhile: never ours
        if is_fresh(st.st_mtime, now, shift):
            return  # written to again: it may be the live file
        if st.st_mtime > c.mtime + 1.0:  # touched or rewritten since indexed: the plan judged an old date
            outcome.changed.append(Candidate(st.st_mtime, c.key, c.stream, c.dir, c.name, st.st_size))
            return
        before_unlink(c)
        if not placement.still_there(fd, c.stream, c.dir):
            _moved_away(fds, c, outcome)
            return
        os.unlink(c.name, dir_fd=fd)
        outcome.deleted.append(Candidate(c.mtime, c.key, c.stream, c.dir, c.name, st.st_size))
    except FileNotFoundError:
        outcome.gone.append(c)  # someone else deleted it: not ours to count
    except OSError as exc:
        outcome.errors += 1
        log_error(f"cannot delete {c.stream}/{c.rel}: {exc.strerror}")


def _moved_away(fds: dict, c: Candidate, outcome: Outcome) -> None:
    """The directory left the root (moved, or replaced): nothing more is deleted from it."""
    key = (c.stream, c.dir)
    if fds.get(key) is not None:
        os.close(fds[key])
        log.warning("retention: %s/%s was moved out of the recordings root during deletion; "
                    "nothing more deleted from it", c.stream, c.dir or ".")
    fds[key] = None
    outcome.gone.append(c)


def _remove_empty_dirs(root_fd: int, fds: dict, dirs: set[tuple[str, str]]) -> None:
    """Remove emptied directories below a stream's own, deepest first; never the stream's."""
    for stream, dir_rel in sorted(dirs, key=lambda d: -d[1].count("/")):
        parts = dir_rel.split("/")
        while parts:
            try:
                parent = open_below(root_fd, [stream, *parts[:-1]])
            except OSError:
                break
            try:
                os.rmdir(parts[-1], dir_fd=parent)  # fails unless empty: a playlist keeps it
            except OSError:
                break
            finally:
                os.close(parent)
            parts.pop()


def log_error(message: str) -> None:
    """Log a retention error, at most once per ERROR_LOG_INTERVAL (callers count them)."""
    now = time.monotonic()
    if now - _last_error_log[0] >= ERROR_LOG_INTERVAL:
        _last_error_log[0] = now
        log.error("retention: %s (further errors counted, logged at most once a minute)", message)
