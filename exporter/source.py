"""The agent's snapshot as the exporter sees it: re-read only when the file was replaced.

The agent replaces ``state.json`` atomically (a rename into place) and touches it
every second.  The exporter watches the directory with inotify (exporter/dirwatch.py)
and learns of both on the event loop, the moment they happen: a ``stat`` at each
event gives the file's identity and mtime, a new content is parsed and checked
there and then (and the listeners run, e.g. the metrics' render), and a request
pays no ``stat``: the age is ``now - mtime`` at the moment of the answer.  Without
a watch (no inotify, no directory yet, the directory removed or replaced) each
read tries to arm it again (reading the file anew when it can) and else ``stat``s
the file as before; the app's tick re-arms it after a mount over the directory
(no event).  A symlinked ``state.json`` is ``stat``ed per read (its target's touch
sends the directory no event), and only a regular file is read (a FIFO would block
the loop).

What the handlers get is presented by agent/snapshot_view.py: a file of the wrong
shape is unreadable (``data`` None, ``unreadable`` True), and a stale one claims
nothing about the present (every stream ``unknown``, ``stale: true``).
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agent.snapshot import loads
from agent.snapshot_view import mark_stale, shape_error

from .dirwatch import CONTENT, IN_Q_OVERFLOW, LOST, OTHER, DirWatch, masks_for

log = logging.getLogger("vas.exporter")

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


def parse(raw: bytes) -> Any:
    """The snapshot's JSON: orjson (twice as fast at 500 streams); what it refuses and the
    standard library reads (NaN, lone surrogates) goes to ``json``, whose error names the
    problem when neither can.  An integer past 64 bits comes back a float (no counter of the
    agent's gets there; :func:`checked` judges such a file as ``json`` reads it); one no float
    holds is refused by both (:func:`agent.snapshot.float_sized`)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return loads(raw.decode("utf-8"))


def checked(raw: bytes) -> tuple[Any, str | None]:
    """The snapshot and its shape problem (None: a snapshot), accepted exactly when ``json``'s
    reading is: orjson turns an integer past 64 bits into a float, which the shape refuses where
    it wants an integer (``restarts``, ``pid``), so a refused file is judged again as ``json``
    reads it (the rare path; a good snapshot pays for orjson only)."""
    data = parse(raw)
    problem = shape_error(data)
    if problem:
        data = loads(raw.decode("utf-8"))
        problem = shape_error(data)
    return data, problem


def read_regular(path: Path) -> bytes:
    """The file's bytes; OSError unless it is a regular file.  Opened without blocking and
    checked before reading: a FIFO put in its place would block the event loop (every answer,
    ``/livez`` too) until someone writes to it, a device such as /dev/zero would never end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return fh.read()


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
        self._mtime: float | None = None  # as of the last stat; None: no file then
        self._watch: DirWatch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warned = False
        self._linked = False  # the path is a symlink: the watch sees neither its target's touch nor its rename
        #: Run on the loop right after a watch event brought a new content (``version`` grew).
        self.listeners: list[Callable[[], None]] = []

    @property
    def watching(self) -> bool:
        """An inotify watch tells of every change: a read costs no ``stat``."""
        return self._watch is not None

    def read(self) -> View:
        """The snapshot now: parsed and marked only when something changed.

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
        """The snapshot's age now (None without a file): from the mtime the last event's ``stat``
        saw; without a watch, or when the path is a symlink (the watch sees the directory's
        entries, not a target elsewhere), ``stat`` now, re-reading the file first if it changed."""
        if self._watch is None and self._loop is not None:
            # Re-armed at once, not at the next tick: the arm reads the file anew, which a stat
            # cannot replace (a snapshot of the same size written into a directory made again
            # takes the inode just freed on ext4).  Without a directory or inotify: ~3 syscalls.
            self.watch(quiet=True)
        if self._watch is None or self._linked:
            self._refresh(force=False)
        if self._mtime is None:
            return None
        return judged_age(time.time() - self._mtime, time.monotonic() - self._seen[1])

    def observe(self) -> None:
        """Note the file's mtime (one ``stat``), so that one which stays put is seen to (the
        app calls this every OBSERVE_EVERY seconds while there is no watch)."""
        try:
            self._unchanged_for(os.stat(self.path).st_mtime_ns)
        except OSError:
            pass

    def tick(self) -> None:
        """The app's task, every OBSERVE_EVERY seconds: drop a watch that no longer sees the
        path (the directory renamed over); without one, note the mtime and try to arm one."""
        if self._watch is not None and self._watch.moved():  # no event (e.g. a mount over it)
            log.warning("the snapshot's directory was replaced: watching the new one")
            self._unwatch()
        if self._watch is None:
            self.observe()
            self.watch()

    def watch(self, *, quiet: bool = False) -> bool:
        """Learn of changes from inotify on the running loop from now on; False (a ``stat`` per
        read, as without it) when inotify or the directory is not there (warned once; ``quiet``:
        not at all, a read's own attempt)."""
        loop, watch = asyncio.get_running_loop(), DirWatch(self.path.parent)
        self._loop = loop
        try:
            watch.open()
        except (OSError, AttributeError) as exc:  # AttributeError: a libc without inotify
            if not self._warned and not quiet:
                log.warning("cannot watch the snapshot's directory (%s): reading it with a stat per request "
                            "until it can", getattr(exc, "strerror", None) or type(exc).__name__)
                self._warned = True
            return False
        if self._warned:
            log.info("watching the snapshot's directory again")
            self._warned = False
        loop.add_reader(watch.fileno(), self._on_events)
        self._watch = watch
        # Armed first: whatever changes after this read has an event.  Read anew, not when the
        # (dev, inode, size) moved: unwatched, a file of the same size may have taken a freed inode.
        self._changed(True)
        return True

    def close(self) -> None:
        """Stop watching (safe to call twice); reads ``stat`` from now on."""
        self._unwatch()
        self._loop = None

    def _on_events(self) -> None:
        assert self._watch is not None
        mask = masks_for(self._watch.read(), os.fsencode(self.path.name))
        if mask & LOST:
            log.warning("the snapshot's directory was removed or moved: reading it with a stat per request "
                        "until it can be watched again")
            self._warned = True
            self._unwatch()  # a stat per read from now on, until the tick arms a new watch
        elif mask & (CONTENT | OTHER | IN_Q_OVERFLOW):
            self._changed(bool(mask & (CONTENT | IN_Q_OVERFLOW)))

    def _changed(self, content: bool) -> None:
        """One ``stat`` (and a parse when the content is new), then the listeners if it was."""
        before = self.version
        self._refresh(force=content)
        if self.version != before:
            for listener in self.listeners:
                try:
                    listener()
                except Exception:  # a listener's bug must not stop the watch
                    log.exception("snapshot listener failed")

    def _unwatch(self) -> None:
        if self._watch is not None and self._loop is not None:
            self._loop.remove_reader(self._watch.fileno())
            self._watch.close()
        # The directory is another one: its file is read anew at the next read, even on the
        # (dev, inode, size) of the last one (ext4 gives a new file the inode just freed).
        self._watch, self._key = None, None

    def _refresh(self, *, force: bool) -> None:
        """One ``stat``: the mtime noted; the file re-read if it changed (or ``force``: an event
        said it was written, which a reused inode of the same size would hide)."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self._key is not None or self._error is None:
                self._key, self._data, self.version = None, None, self.version + 1
            why = exc.strerror or type(exc).__name__
            self._error, self._unreadable, self._mtime = f"no agent snapshot (state.json): {why}", False, None
            return
        key = (st.st_dev, st.st_ino, st.st_size)
        self._linked = self._watch is not None and os.path.islink(self.path)
        if force or key != self._key:
            self._load(key)
        self._mtime = st.st_mtime
        self._unchanged_for(st.st_mtime_ns)

    def _unchanged_for(self, mtime_ns: int) -> float:
        now = time.monotonic()
        if mtime_ns != self._seen[0]:
            self._seen = (mtime_ns, now)
        return now - self._seen[1]

    def _load(self, key: tuple[int, int, int]) -> None:
        try:
            data, problem = checked(read_regular(self.path))
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
