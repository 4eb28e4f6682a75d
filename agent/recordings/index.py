"""The recording index: every segment under ``recordings.root``, per stream and directory.

Twelve million segments must not mean twelve million Python objects: each directory
keeps its segments packed (:class:`~agent.recordings.pack.DirSegments`, 24 bytes per
segment), sorted oldest first.  Totals are kept as they change, so reports and
policies never walk the tree.  The index is updated from watchdog (inotify) events
on watchdog's thread and by scans on worker threads; one lock guards it.  The
policies read it through :meth:`SegmentIndex.oldest_first`.
"""
from __future__ import annotations

import os
import stat
import threading
from bisect import bisect_right
from collections.abc import Collection, Iterator
from pathlib import Path

from agent.blocking import pool
from agent.recordings.delete import SEGMENT_EXTENSIONS, Candidate, candidate, log_error
from agent.recordings.dirfd import open_folder
from agent.recordings.pack import DirSegments
from agent.recordings.timing import Timing

__all__ = ["DirSegments", "SegmentIndex", "SCAN_THREADS"]
#: Stream directories scanned at once.  More threads lose to GIL hand-offs: on a
#: cold 300k-file tree, 2 threads took 2.3 s, 4 took 2.9 s, 8 took 3.4 s, 1 took 3.8 s (on
#: a cold 1M-file tree, 4 and 8 no better than 2, with more CPU).
SCAN_THREADS = 2


def _candidates(sid: str, dir_rel: str, d: DirSegments) -> Iterator[Candidate]:
    # A function, not a generator expression in a loop: each binds its own dir_rel.
    for mtime, size, name in d.iter():
        yield candidate(sid, dir_rel, name, mtime, size)


def walk_packed(root_fd: int, stream: str, links: list[str]) -> Iterator[tuple[str, DirSegments]]:
    """``(dir_rel, segments)`` for every directory of one stream's tree, packed as read.

    Never follows a symlink (``links`` collects their paths, relative to the stream's
    directory: retention never cleans there, so it says so); unreadable directories
    are logged and skipped.  One ``fstatat`` per segment, none per other entry (the
    type comes from the directory entry).
    """
    stack = [""]
    while stack:
        dir_rel = stack.pop()
        try:
            fd = open_folder(root_fd, stream, dir_rel)
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):
                log_error(f"cannot index {stream}/{dir_rel}: {exc.strerror}")
            continue
        d = DirSegments()
        try:
            d.dev = os.fstat(fd).st_dev
            _read_dir(fd, dir_rel, d, stack, links)
        except OSError as exc:
            log_error(f"cannot index {stream}/{dir_rel}: {exc.strerror}")
        finally:
            os.close(fd)
        d.finish()
        yield dir_rel, d


def _read_dir(fd: int, dir_rel: str, d: DirSegments, stack: list[str], links: list[str]) -> None:
    add, isreg = d.add, stat.S_ISREG  # locals: this loop runs once per file of the tree
    with os.scandir(fd) as entries:
        for e in entries:  # types from the directory entry: one fstatat per segment, none per other entry
            name = e.name
            try:
                if e.is_symlink():
                    links.append(f"{dir_rel}/{name}" if dir_rel else name)
                elif e.is_dir(follow_symlinks=False):
                    stack.append(f"{dir_rel}/{name}" if dir_rel else name)
                elif name.endswith(SEGMENT_EXTENSIONS) and name[0] != ".":  # is_segment_name, inline
                    st = e.stat(follow_symlinks=False)
                    if isreg(st.st_mode):
                        add(name, st.st_mtime, st.st_size)
            except FileNotFoundError:
                pass  # deleted while we looked


class SegmentIndex:
    """Every stream directory's segments (configured or orphaned), kept current by events."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.streams: dict[str, dict[str, DirSegments]] = {}
        self.links: dict[str, list[str]] = {}  # per stream: symlinks found by the last scan (never followed)
        self.timing = Timing()  # media start and duration of segments FFmpeg's playlists named

    # -- building ----------------------------------------------------------------
    def scan_all(self, skip: Collection[str] = ()) -> None:
        """Index the whole root (blocking: run it in a thread).  Replaces what was known, but for
        the folders in ``skip`` (not answering: a hung mount), which keep what they had."""
        try:
            with os.scandir(self.root) as entries:
                names = [e.name for e in entries if e.name not in skip and e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            names = []
        # Threads: a cold scan waits on the disk for each inode; overlapping those waits
        # (the GIL is released meanwhile) saves a third of the time.
        list(pool("vas-scan", SCAN_THREADS).map(self.scan_stream, names))
        with self.lock:
            for gone in set(self.streams) - set(names) - set(skip):
                del self.streams[gone]
            for gone in set(self.links) - set(names) - set(skip):
                del self.links[gone]

    def scan_stream(self, sid: str) -> None:
        """Index one stream's tree again (blocking)."""
        dirs: dict[str, DirSegments] = {}
        links: list[str] = []
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for dir_rel, d in walk_packed(fd, sid, links):
                if len(d):
                    dirs[dir_rel] = d
        finally:
            os.close(fd)
        with self.lock:
            self.links[sid] = links
            if dirs:
                self.streams[sid] = dirs
            else:
                self.streams.pop(sid, None)

    # -- events (watchdog's thread) -----------------------------------------------
    def upsert(self, sid: str, dir_rel: str, name: str, mtime: float, size: int, dev: int = -1) -> None:
        with self.lock:
            d = self.streams.setdefault(sid, {}).setdefault(dir_rel, DirSegments(dev=dev))
            d.dev = dev if dev >= 0 else d.dev  # a file's st_dev is its directory's filesystem
            d.upsert(name, mtime, size)

    def mtime_of(self, sid: str, dir_rel: str, name: str) -> float | None:
        """The indexed mtime of one segment, or None (lock held)."""
        d = self.streams.get(sid, {}).get(dir_rel)
        i = d.find(name)[0] if d is not None else -1
        return d.mtimes[i] if d is not None and i >= 0 else None

    def lowest_number(self, sid: str, dir_rel: str, gkey: tuple) -> int | None:
        """A number at or below the lowest of run ``gkey`` in one folder; None: none left (lock held)."""
        d = self.streams.get(sid, {}).get(dir_rel)
        return d.lowest(gkey) if d is not None else None

    def discard(self, sid: str, dir_rel: str, name: str) -> bool:
        with self.lock:
            d = self.streams.get(sid, {}).get(dir_rel)
            found = d is not None and d.discard(name)
            self._prune(sid, dir_rel)
            return found

    def discard_tree(self, sid: str, dir_rel: str) -> None:
        """A directory was removed or moved away: forget it and everything below."""
        with self.lock:
            dirs = self.streams.get(sid, {})
            for d in [d for d in dirs if not dir_rel or d == dir_rel or d.startswith(dir_rel + "/")]:
                del dirs[d]
            self._prune(sid, None)

    def forget(self, deleted: list[Candidate]) -> None:
        """Remove segments the executor deleted (or found gone)."""
        by_dir: dict[tuple[str, str], set[str]] = {}
        for c in deleted:
            by_dir.setdefault((c.stream, c.dir), set()).add(c.name)
        with self.lock:
            for (sid, dir_rel), names in by_dir.items():
                d = self.streams.get(sid, {}).get(dir_rel)
                if d is not None:
                    d.remove_names(names)
                    self._prune(sid, dir_rel)

    def prune(self, sid: str, dir_rel: str | None) -> None:
        """Forget an emptied directory (and stream); call with ``lock`` held."""
        self._prune(sid, dir_rel)

    def _prune(self, sid: str, dir_rel: str | None) -> None:
        dirs = self.streams.get(sid)
        if dirs is None:
            return
        if dir_rel is not None and dir_rel in dirs and not len(dirs[dir_rel]):
            del dirs[dir_rel]
        if not dirs:
            del self.streams[sid]

    # -- reading -------------------------------------------------------------------
    def stats(self, sid: str) -> tuple[int, int, float | None, float | None]:
        """``(segment_count, total_bytes, oldest mtime, newest mtime)`` of one stream."""
        with self.lock:
            dirs = list(self.streams.get(sid, {}).values())
            return (sum(len(d) for d in dirs), sum(d.total for d in dirs),
                    min((d.mtimes[0] for d in dirs), default=None),
                    max((d.mtimes[-1] for d in dirs), default=None))

    def oldest_first(self, sid: str, dev: int | None = None) -> list[Iterator[Candidate]]:
        """Per directory, the stream's segments oldest first (merge them with heapq.merge);
        with ``dev``, only directories on that filesystem.

        Call with ``lock`` held and consume before releasing it.
        """
        return [_candidates(sid, dir_rel, d) for dir_rel, d in self.streams.get(sid, {}).items()
                if dev is None or d.dev == dev]

    def devices(self) -> dict[int, tuple[str, str]]:
        """Each filesystem (st_dev) holding indexed segments, with one directory on it."""
        with self.lock:
            out: dict[int, tuple[str, str]] = {}
            for sid, dirs in self.streams.items():
                for dir_rel, d in dirs.items():
                    out.setdefault(d.dev, (sid, dir_rel))
            return out

    def ahead(self, sid: str, after: float) -> tuple[int, int, float | None]:
        """``(count, bytes, latest mtime)`` of the stream's segments dated after ``after``
        (call with ``lock`` held; one bisect per directory)."""
        count = size = 0
        latest = None
        for d in self.streams.get(sid, {}).values():
            i = bisect_right(d.mtimes, after)
            if i < len(d):
                count, size = count + len(d) - i, size + sum(d.sizes[i:])
                latest = d.mtimes[-1] if latest is None else max(latest, d.mtimes[-1])
        return count, size, latest

    def newest(self, sid: str, before: float | None = None) -> Candidate | None:
        """The stream's newest segment, of those dated at most ``before`` when given (a clock
        glitch's future-dated files are not the one being written); call with ``lock`` held."""
        best = None
        for dir_rel, d in self.streams.get(sid, {}).items():
            i = len(d) if before is None else bisect_right(d.mtimes, before)
            if i:
                c = candidate(sid, dir_rel, d.name(i - 1), d.mtimes[i - 1], d.sizes[i - 1])
                best = c if best is None or c > best else best
        return best
