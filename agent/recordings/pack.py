"""One directory's segments, packed: 24 bytes per segment whatever the names' length.

FFmpeg's names share a prefix per run (``{id}_{start}[-eN]_%06d.ts``), so a name is
kept as a small integer *key*: a group (prefix, suffix, zero-padding width; one per
run, shared) in the high bits and the name's last number (up to 12 digits) in the low
40.  A name without such a number is a group of its own (the fallback: any name is
indexed, odd ones just cost a group each).  Three packed arrays, sorted oldest first,
hold mtime, size and key: no Python object per segment.

Each group keeps its count and conservative bounds of its numbers, so a new segment
(its run's next number) is known to be absent without a search: an upsert costs the
same at 1,000 or 1,000,000 segments.  A name inside its group's bounds is searched
from the newest end first (a rewrite is of a recent file), then in the packed keys.
"""
from __future__ import annotations

import heapq
import itertools
import operator
import re
import sys
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, MutableSequence

from agent.recordings.delete import natural_key

#: A name's last number (at most 12 digits, so it fits the key's low 40 bits), with the
#: text before and after it.
_NAME = re.compile(r"(.*[^0-9]|)([0-9]{1,12})([^0-9]*)\Z", re.S)
_DIGITS = "0123456789"
_SEQ_BITS = 40
_SEQ_MASK = (1 << _SEQ_BITS) - 1
#: Keys searched from the newest end before the whole array (new files land there).
_TAIL = 1024
#: Entries sorted at once when a directory is built; larger ones are sorted in runs and
#: merged, so building a 1M-segment folder never holds a Python object per segment.
CHUNK = 1 << 14


class _Group:
    """The names of one run: ``prefix + number (zero-padded to width) + suffix``."""

    __slots__ = ("prefix", "suffix", "width", "count", "lo", "hi")

    def __init__(self, prefix: str, suffix: str | None, width: int) -> None:
        self.prefix, self.suffix, self.width = prefix, suffix, width  # suffix None: a whole name
        self.count, self.lo, self.hi = 0, _SEQ_MASK, -1  # lo/hi: may be wider than the truth, never narrower

    def name(self, seq: int) -> str:
        """The name holding number ``seq``."""
        return self.prefix if self.suffix is None else f"{self.prefix}{seq:0{self.width}d}{self.suffix}"


def run_key(name: str) -> tuple[tuple[str, str | None, int], int]:
    """``(group key, number)`` of a name; ``number`` formats back to the very same digits.
    The names of one FFmpeg run share the group key.

    The number is the last one before the extension (``.mp4``'s 4 is not a sequence)."""
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    head = stem.rstrip(_DIGITS)
    digits = stem[len(head):]
    if not digits or len(digits) > 12:  # not FFmpeg's pattern: its last number, if it has one
        m = _NAME.match(stem)
        if m is None:
            return (name, None, 0), 0
        head, digits, tail = m.groups()
        ext = tail + ext
    return (head, ext, len(digits) if digits[0] == "0" else 1), int(digits)


class DirSegments:
    """One directory's segments, sorted by (mtime, natural name): packed, no object per file."""

    __slots__ = ("mtimes", "sizes", "keys", "groups", "gids", "free", "total", "dev")

    def __init__(self, entries: Iterable[tuple[float, int, str]] = (), dev: int = -1) -> None:
        self.mtimes, self.sizes, self.keys = array("d"), array("q"), array("Q")
        self.groups: list[_Group | None] = []
        self.gids: dict[tuple[str, str | None, int], int] = {}
        self.free: list[int] = []  # group slots whose run has no segment left
        self.total = 0
        self.dev = dev  # st_dev of the filesystem holding the directory (-1: not known)
        for mtime, size, name in entries:
            self.add(name, mtime, size)
        self.finish()

    def __len__(self) -> int:
        return len(self.mtimes)

    # -- building (a scan: add every file, then finish once) -----------------------------
    def add(self, name: str, mtime: float, size: int) -> None:
        """Append a segment in any order (the caller calls :meth:`finish` after the last)."""
        gkey, seq = run_key(name)
        gid = self.gids.get(gkey)
        if gid is None:
            gid = self._group(gkey)
        g: _Group = self.groups[gid]  # type: ignore[assignment]  # a gid in gids is a live group
        g.count += 1
        if seq > g.hi:  # comparisons, not min()/max(): this runs once per file of a scan
            g.hi = seq
        if seq < g.lo:
            g.lo = seq
        self.mtimes.append(mtime)
        self.sizes.append(size)
        self.keys.append(gid << _SEQ_BITS | seq)
        self.total += size

    def finish(self) -> None:
        """Sort what :meth:`add` appended: by mtime, equal mtimes in natural name order."""
        order = _order(self.mtimes)
        if any(map(operator.ne, order, range(len(order)))):
            self.mtimes = array("d", map(self.mtimes.__getitem__, order))
            self.sizes = array("q", map(self.sizes.__getitem__, order))
            self.keys = array("Q", map(self.keys.__getitem__, order))
        del order
        self._natural_ties()

    def _natural_ties(self) -> None:
        m, end = self.mtimes, -1
        # Runs of equal mtimes found at C speed (there are usually none), then put in name order.
        for i in itertools.compress(itertools.count(), map(operator.eq, m, itertools.islice(m, 1, None))):
            if i < end:
                continue  # inside the run just sorted
            end = i + 2
            while end < len(m) and m[end] == m[i]:
                end += 1
            run = sorted(range(i, end), key=lambda x: natural_key(self.name(x)))
            self.sizes[i:end] = array("q", [self.sizes[x] for x in run])
            self.keys[i:end] = array("Q", [self.keys[x] for x in run])

    # -- reading ------------------------------------------------------------------------
    def name(self, i: int) -> str:
        """The name of entry ``i``."""
        key = self.keys[i]
        g = self.groups[key >> _SEQ_BITS]
        assert g is not None
        return g.name(key & _SEQ_MASK)

    def names(self) -> list[str]:
        """Every name, oldest first."""
        return [self.name(i) for i in range(len(self.keys))]

    def iter(self) -> Iterator[tuple[float, int, str]]:
        """``(mtime, size, name)`` oldest first, lazily (planners stop early)."""
        for i in range(len(self.mtimes)):
            yield self.mtimes[i], self.sizes[i], self.name(i)

    def window(self, lo: int, hi: int) -> DirSegments:
        """A copy of entries ``[lo, hi)`` to read without the index lock: arrays copied at memory
        speed, and the groups it names (a group's name parts never change once made)."""
        w = DirSegments.__new__(DirSegments)
        w.mtimes, w.sizes, w.keys = self.mtimes[lo:hi], self.sizes[lo:hi], self.keys[lo:hi]
        w.groups, w.gids, w.free, w.total, w.dev = list(self.groups), {}, [], sum(w.sizes), self.dev
        return w

    def run_of(self, i: int) -> tuple[tuple[str, str | None, int], int]:
        """``(group key, number)`` of entry ``i`` (as :func:`run_key` of its name)."""
        key = self.keys[i]
        g = self.groups[key >> _SEQ_BITS]
        assert g is not None
        return (g.prefix, g.suffix, g.width), key & _SEQ_MASK

    def run_bounds(self) -> dict[tuple[str, str | None, int], tuple[int, int]]:
        """Each run's lowest and highest number among the entries held (one pass over the keys)."""
        seen: dict[int, list[int]] = {}
        for key in self.keys:
            gid, seq = key >> _SEQ_BITS, key & _SEQ_MASK
            b = seen.get(gid)
            if b is None:
                seen[gid] = [seq, seq]
            elif seq < b[0]:
                b[0] = seq
            elif seq > b[1]:
                b[1] = seq
        out = {}
        for gid, (lo, hi) in seen.items():
            g = self.groups[gid]
            assert g is not None
            out[(g.prefix, g.suffix, g.width)] = (lo, hi)
        return out

    def lowest(self, gkey: tuple[str, str | None, int]) -> int | None:
        """A number at or below the lowest the run ``gkey`` holds; None when it holds none."""
        gid = self.gids.get(gkey)
        g = self.groups[gid] if gid is not None else None
        return g.lo if g is not None and g.count else None

    def same_run(self, i: int, j: int) -> bool:
        """True when entries ``i`` and ``j`` are of one run (one name pattern: one FFmpeg start)."""
        return self.keys[i] >> _SEQ_BITS == self.keys[j] >> _SEQ_BITS

    def names_like(self, wanted: Callable[[str], bool], span: int = 64) -> list[str] | None:
        """The names held here that ``wanted`` accepts, asked per run (a run's names differ only in
        their number): a few lookups, not a walk.  None when a run of more than ``span`` numbers
        might hold one (the caller walks then)."""
        out: list[str] = []
        for g in self.groups:
            if g is None or not g.count or not wanted(g.name(g.lo)):
                continue
            if g.suffix is None:
                out.append(g.prefix)
            elif g.hi - g.lo >= span:
                return None
            else:
                out += [n for seq in range(g.lo, g.hi + 1) if self.find(n := g.name(seq))[0] >= 0]
        return out

    def find(self, name: str) -> tuple[int, int]:
        """``(index, key)`` of ``name``, or ``(-1, -1)``."""
        key = self._key(name, create=False)
        i = self._index(key) if key >= 0 else -1
        return (i, key) if i >= 0 else (-1, -1)

    # -- changing -----------------------------------------------------------------------
    def upsert(self, name: str, mtime: float, size: int) -> None:
        """Add ``name`` or update it (a rewrite moves it to its new place in the order)."""
        self.discard(name)  # first: the last segment of a run frees its group
        key = self._key(name, create=True)
        m = self.mtimes
        i = len(m) if not m or mtime >= m[-1] else bisect_right(m, mtime)
        m.insert(i, mtime)
        self.sizes.insert(i, size)
        self.keys.insert(i, key)
        self.total += size
        self._count(key, +1)

    def discard(self, name: str) -> bool:
        """Remove ``name``; False when it was not here."""
        i, _ = self.find(name)
        if i >= 0:
            self._remove_at(i)
        return i >= 0

    def remove_names(self, names: set[str]) -> None:
        """Remove several names, found from the oldest end (where deletions happen).

        In place: the arrays keep their memory blocks, so a folder whose oldest segments go as
        new ones come (retention's steady state) never reallocates them.  New arrays on every
        pass, made on whichever thread runs it, would move the index between glibc's arenas
        and leave holes that fill only slowly: an RSS that grows for hours."""
        wanted = {k for n in names if (k := self._key(n, create=False)) >= 0}
        m, s, keys = self.mtimes, self.sizes, self.keys
        kept, i, n = 0, 0, len(m)
        while wanted and i < n:
            key = keys[i]
            if key in wanted:
                wanted.discard(key)
                self.total -= s[i]
                self._count(key, -1)
            else:
                if kept != i:
                    m[kept], s[kept], keys[kept] = m[i], s[i], key
                kept += 1
            i += 1
        if kept != i:
            for a in (m, s, keys):
                _close_gap(a, kept, i)

    # -- keys and groups ------------------------------------------------------------------
    def _key(self, name: str, create: bool) -> int:
        """The key of ``name`` (-1: its group is unknown and ``create`` is false)."""
        gkey, seq = run_key(name)
        gid = self.gids.get(gkey)
        if gid is None:
            if not create:
                return -1
            gid = self._group(gkey)
        return gid << _SEQ_BITS | seq

    def _group(self, gkey: tuple[str, str | None, int]) -> int:
        """A new group's id (a freed slot first)."""
        gid = self.free.pop() if self.free else len(self.groups)
        if gid == len(self.groups):
            self.groups.append(None)
        self.groups[gid] = _Group(*gkey)
        self.gids[gkey] = gid
        return gid

    def _count(self, key: int, delta: int) -> None:
        gid, seq = key >> _SEQ_BITS, key & _SEQ_MASK
        g = self.groups[gid]
        assert g is not None
        g.count += delta
        if delta > 0:
            g.lo, g.hi = min(g.lo, seq), max(g.hi, seq)
        elif not g.count:  # the run's last segment went: its slot serves a new run
            del self.gids[(g.prefix, g.suffix, g.width)]
            self.groups[gid] = None
            self.free.append(gid)

    def _index(self, key: int) -> int:
        """Position of ``key`` or -1; no search when its group's bounds exclude it."""
        g = self.groups[key >> _SEQ_BITS]
        seq = key & _SEQ_MASK
        if g is None or not g.count or not g.lo <= seq <= g.hi:
            return -1
        keys = self.keys
        tail = max(0, len(keys) - _TAIL)
        try:
            return keys.index(key, tail)
        except ValueError:
            pass
        # The rest at memory speed: one copy and a byte search (array.index makes an int per entry).
        blob, needle = memoryview(keys)[:tail].tobytes(), key.to_bytes(8, sys.byteorder)
        pos = blob.rfind(needle)
        while pos >= 0 and pos % 8:  # a match straddling two keys: look before it
            pos = blob.rfind(needle, 0, pos + 7)
        return pos // 8 if pos >= 0 else -1

    def _remove_at(self, i: int) -> None:
        self.total -= self.sizes[i]
        self._count(self.keys[i], -1)
        del self.mtimes[i], self.sizes[i], self.keys[i]


#: Items an array can lose at once without CPython reallocating (shrinking) its block.
_QUIET_CUT = 15
_EMPTY = array("d").__sizeof__()


def _close_gap(a: array, lo: int, hi: int) -> None:
    """Remove ``a[lo:hi]`` keeping ``a``'s memory block: the tail moves down in place, then the
    array is cut in steps too small for CPython to shrink the block.  When less than half the
    block stays in use, the memory goes back instead (a folder that shrank for good)."""
    n = len(a)
    keep = n - (hi - lo)
    if hi < n:
        with memoryview(a) as view:  # a memmove: no copy of the tail
            view[lo:keep] = view[hi:n]
    if keep < (a.__sizeof__() - _EMPTY) // a.itemsize // 2:
        del a[keep:]
        return
    while len(a) > keep:
        del a[max(keep, len(a) - _QUIET_CUT):]


def _order(mtimes: array) -> MutableSequence[int]:
    """Positions of ``mtimes`` in ascending order (stable).  Sorted in runs of CHUNK and
    merged, so the transient Python objects are bounded by CHUNK, not by the directory."""
    n = len(mtimes)
    if n <= CHUNK:
        return sorted(range(n), key=mtimes.__getitem__)
    runs = [array("I", sorted(range(lo, min(n, lo + CHUNK)), key=mtimes.__getitem__)) for lo in range(0, n, CHUNK)]
    return array("I", heapq.merge(*runs, key=mtimes.__getitem__))
