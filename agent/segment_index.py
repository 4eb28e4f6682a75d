"""The recording index: every segment under ``recordings.root``, per stream and directory.

Twelve million segments must not mean twelve million Python objects, so each
directory keeps its segments in packed arrays sorted oldest first: mtime (8 B),
size (8 B) and the name NUL-terminated in one ``bytearray`` (about 50 B per
segment with the agent's own names).  Totals are kept as they change, so
reports and policies never walk the tree.  The index is updated from watchdog
(inotify) events on watchdog's thread and by scans on worker threads; one lock
guards it.  The policies read it through :meth:`SegmentIndex.oldest_first`.
"""
from __future__ import annotations

import os
import threading
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path

from .retention import Candidate, candidate, natural_key, walk_stream

#: A name searched for near the newest end of a directory first (new files land there).
_TAIL = 8192
#: Stream directories scanned at once.  More threads lose to GIL hand-offs: on a
#: cold 300k-file tree, 2 threads took 2.3 s, 4 took 2.9 s, 8 took 3.4 s, 1 took 3.8 s.
SCAN_THREADS = 2


class DirSegments:
    """One directory's segments, sorted by (mtime, natural name): packed, no object per file."""

    __slots__ = ("mtimes", "sizes", "blob", "total", "dev")

    def __init__(self, entries: list[tuple[float, int, str]] = (), dev: int = -1) -> None:  # type: ignore[assignment]
        self.mtimes, self.sizes, self.blob, self.total = array("d"), array("q"), bytearray(b"\0"), 0
        self.dev = dev  # st_dev of the filesystem holding the directory (-1: not known)
        for mtime, size, name in _ordered(entries):
            self.mtimes.append(mtime)
            self.sizes.append(size)
            self.blob += _enc(name) + b"\0"
            self.total += size

    def __len__(self) -> int:
        return len(self.mtimes)

    def iter(self) -> Iterator[tuple[float, int, str]]:
        """``(mtime, size, name)`` oldest first, lazily (planners stop early)."""
        pos, blob = 1, self.blob
        for i in range(len(self.mtimes)):
            end = blob.index(b"\0", pos)
            yield self.mtimes[i], self.sizes[i], blob[pos:end].decode("utf-8", "surrogateescape")
            pos = end + 1

    def find(self, name: str) -> tuple[int, int]:
        """``(index, byte offset of its leading NUL)`` of ``name``, or ``(-1, -1)``."""
        needle = b"\0" + _enc(name) + b"\0"
        pos = self.blob.rfind(needle, max(0, len(self.blob) - _TAIL))
        if pos < 0:
            pos = self.blob.find(needle)
        if pos < 0:
            return -1, -1
        # Entries after this one each end in a NUL, and so does this one.
        return len(self.mtimes) - self.blob.count(b"\0", pos + 1), pos

    def upsert(self, name: str, mtime: float, size: int) -> None:
        """Add ``name`` or update it (a rewrite moves it to its new place in the order)."""
        self.discard(name)
        i = bisect_right(self.mtimes, mtime)
        self.mtimes.insert(i, mtime)
        self.sizes.insert(i, size)
        at = self._offset(i)
        self.blob[at:at] = _enc(name) + b"\0"
        self.total += size

    def discard(self, name: str) -> bool:
        """Remove ``name``; False when it was not here."""
        i, pos = self.find(name)
        if i < 0:
            return False
        del self.blob[pos + 1:pos + 2 + len(_enc(name))]
        self.total -= self.sizes[i]
        del self.mtimes[i], self.sizes[i]
        return True

    def remove_names(self, names: set[str]) -> None:
        """Remove several names, found from the oldest end (where deletions happen)."""
        wanted = {_enc(n) for n in names}
        keep_m, keep_s, keep_b = array("d"), array("q"), bytearray(b"\0")
        pos, i, n = 1, 0, len(self.mtimes)
        while wanted and i < n:
            end = self.blob.index(b"\0", pos)
            name = bytes(self.blob[pos:end])
            if name in wanted:
                wanted.discard(name)
                self.total -= self.sizes[i]
            else:
                keep_m.append(self.mtimes[i])
                keep_s.append(self.sizes[i])
                keep_b += name + b"\0"
            pos, i = end + 1, i + 1
        self.blob = keep_b + self.blob[pos:]
        self.mtimes = keep_m + self.mtimes[i:]
        self.sizes = keep_s + self.sizes[i:]

    def _offset(self, i: int) -> int:
        """Byte offset where entry ``i`` starts (len(blob) for one past the end)."""
        n, blob = len(self.mtimes) - 1, self.blob  # called after the arrays grew by one
        if i >= n:
            return len(blob)
        if i < n // 2:
            pos = 0
            for _ in range(i):
                pos = blob.index(b"\0", pos + 1)
            return pos + 1
        pos = len(blob) - 1
        for _ in range(n - i):
            pos = blob.rindex(b"\0", 0, pos)
        return pos + 1


def _ordered(entries: list[tuple[float, int, str]]) -> list[tuple[float, int, str]]:
    """By mtime, ties in natural name order (numbers as numbers) without a key per entry."""
    out = sorted(entries, key=lambda e: e[0])
    i = 0
    while i < len(out) - 1:
        j = i + 1
        while j < len(out) and out[j][0] == out[i][0]:
            j += 1
        if j - i > 1:
            out[i:j] = sorted(out[i:j], key=lambda e: natural_key(e[2]))
        i = j
    return out


def _candidates(sid: str, dir_rel: str, d: DirSegments) -> Iterator[Candidate]:
    # A function, not a generator expression in a loop: each binds its own dir_rel.
    for mtime, size, name in d.iter():
        yield candidate(sid, dir_rel, name, mtime, size)


def _dev_of(root_fd: int, sid: str, dir_rel: str) -> int:
    """st_dev of a stream directory (the free-space floor is per filesystem); -1 if gone."""
    try:
        return os.stat(f"{sid}/{dir_rel}" if dir_rel else sid, dir_fd=root_fd, follow_symlinks=False).st_dev
    except OSError:
        return -1


def _enc(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


class SegmentIndex:
    """Every stream directory's segments (configured or orphaned), kept current by events."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.streams: dict[str, dict[str, DirSegments]] = {}
        self.links: dict[str, list[str]] = {}  # per stream: symlinks found by the last scan (never followed)

    # -- building ----------------------------------------------------------------
    def scan_all(self) -> None:
        """Index the whole root (blocking: run it in a thread).  Replaces what was known."""
        try:
            with os.scandir(self.root) as entries:
                names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            names = []
        # Threads: a cold scan waits on the disk for each inode; overlapping those waits
        # (the GIL is released meanwhile) saves a third of the time.
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(SCAN_THREADS, thread_name_prefix="vas-scan") as pool:
            list(pool.map(self.scan_stream, names))
        with self.lock:
            for gone in set(self.streams) - set(names):
                del self.streams[gone]
            for gone in set(self.links) - set(names):
                del self.links[gone]

    def scan_stream(self, sid: str) -> None:
        """Index one stream's tree again (blocking)."""
        dirs: dict[str, DirSegments] = {}
        links: list[str] = []
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for dir_rel, files in walk_stream(fd, sid, links):
                if files:
                    dirs[dir_rel] = DirSegments(files, _dev_of(fd, sid, dir_rel))
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
                start = _nul_before(d.blob, i, len(d))
                name = d.blob[start + 1:d.blob.index(b"\0", start + 1)].decode("utf-8", "surrogateescape")
                c = candidate(sid, dir_rel, name, d.mtimes[i - 1], d.sizes[i - 1])
                best = c if best is None or c > best else best
        return best


def _nul_before(blob: bytearray, i: int, n: int) -> int:
    """Offset of the NUL that starts entry ``i - 1`` of ``n`` (searched from the end: ``i`` is near it)."""
    pos = len(blob) - 1
    for _ in range(n - i + 1):
        pos = blob.rindex(b"\0", 0, pos)
    return pos
