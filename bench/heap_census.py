"""Where a live process's glibc malloc memory is, and what moved between two looks.

What it shows
    Every chunk of glibc's main heap (``[heap]``) and of each thread arena (a 64 MiB-aligned
    anonymous mapping), read from ``/proc/PID/mem`` without stopping the process: per heap,
    the bytes in use, free and in the top chunk, and the chunks in use by kind and size
    (KiB, rounded down).  A chunk's kind is the Python type whose object starts it (a
    ``PyObject`` header, with or without the collector's header before it), else
    ``buffer:epoch-doubles`` (starts with a float64 in 2020-2030 as a Unix time: the
    retention index's mtimes), ``buffer:text`` or ``buffer``.  Chunks in glibc's per-thread
    cache look in use: a few per size.
    A chunk in a thread's cache (glibc's tcache: up to 7 free chunks per size up to 1 KiB,
    per thread, reusable by that thread only) counts as ``cached``, not in use: it carries
    the process's tcache key, a random word no pointer equals.  Each thread's cache keeps its
    counts in a chunk of its own (``tcache_perthread_struct``); the census finds those and
    prints what each thread's cache holds, per heap: caches filling over many threads show
    as many mid-sized figures that grow between two looks (up to 240 KiB a thread).
    ``--then S`` looks again S seconds later and prints the kinds whose bytes changed most
    per heap: memory moving between arenas shows as the same kind and size leaving one heap
    and arriving in another (the index's arrays did, before remove_names worked in place).
    Python's small objects live in its own 1 MiB arenas, not in these heaps.

How to run (as root, or as the process's user with ptrace allowed)
    .venv/bin/python bench/heap_census.py $(pgrep -f bin/vas-agent)
    .venv/bin/python bench/heap_census.py PID --then 600 --top 20
"""
from __future__ import annotations

import argparse
import collections
import re
import struct
import sys
import time
from dataclasses import dataclass, field

#: glibc's thread arenas are heaps of HEAP_MAX_SIZE (64 MiB on 64-bit), aligned to it.
ARENA_ALIGN = 64 << 20
#: Unix times of 2020-01-01 and 2030-01-01: a chunk that starts with one is a time array.
EPOCH_LO, EPOCH_HI = 1.5778368e9, 1.8934560e9


@dataclass
class Heap:
    name: str
    in_use: int = 0
    free: int = 0
    cached: int = 0  # free chunks held in threads' caches (tcache)
    caches: list[int] = field(default_factory=list)  # bytes held by each thread cache kept in this heap
    top: int = 0
    kinds: collections.Counter = field(default_factory=collections.Counter)  # (kind, KiB) -> bytes
    counts: collections.Counter = field(default_factory=collections.Counter)  # (kind, KiB) -> chunks


class Memory:
    """Reads of another process's memory (``/proc/PID/mem``)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.file = open(f"/proc/{pid}/mem", "rb", buffering=0)  # noqa: SIM115 (closed by close())
        self._names: dict[int, str | None] = {}

    def close(self) -> None:
        self.file.close()

    def read(self, addr: int, n: int) -> bytes:
        try:
            self.file.seek(addr)
            return self.file.read(n) or b""
        except (OSError, ValueError, OverflowError):
            return b""

    def type_name(self, addr: int) -> str | None:
        """``tp_name`` of the type object at ``addr``, or None when it is not one."""
        if addr in self._names:
            return self._names[addr]
        name = None
        if addr % 8 == 0 and 0x10000 < addr < 1 << 47:
            raw = self.read(addr + 24, 8)  # ob_refcnt, ob_type, ob_size, then tp_name
            if len(raw) == 8:
                text = self.read(struct.unpack("<Q", raw)[0], 80).split(b"\0")[0]
                if 2 <= len(text) < 80 and all(33 <= c < 127 for c in text):
                    name = text.decode()
        self._names[addr] = name
        return name

    def heaps(self) -> list[tuple[str, int, int]]:
        out = []
        with open(f"/proc/{self.pid}/maps") as maps:
            for line in maps:
                m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)", line)
                if m is None or not m[3].startswith("rw"):
                    continue
                start, end, what = int(m[1], 16), int(m[2], 16), m[4].strip()
                if what == "[heap]":
                    out.append(("main heap", start, end))
                elif not what and start % ARENA_ALIGN == 0:
                    out.append((f"arena {start:#x}", start, end))
        return out


def chunks(data: bytes) -> list[tuple[int, int]]:
    """``(offset, size)`` of each chunk, the top chunk last.  The first chunk follows the
    heap's own headers (none for the main heap): the first offset whose chain of sizes ends
    exactly at the end of the mapping."""
    for first in range(0, 0x1200, 0x10):
        out, pos = [], first
        while pos + 16 <= len(data):
            size = struct.unpack_from("<Q", data, pos + 8)[0] & ~7
            if size < 32 or size % 16 or pos + size > len(data):
                break
            out.append((pos, size))
            pos += size
        if pos == len(data) and len(out) > 2:
            return out
    return []


#: The largest chunk a thread's cache holds (glibc's default tcache_max_bytes, 1032 B, as a chunk).
TCACHE_MAX_CHUNK = 1040
#: A thread's cache's own chunk: ``uint16_t counts[64]`` then ``tcache_entry *entries[64]`` (glibc 2.30+).
TCACHE_STRUCT_CHUNK, TCACHE_BINS, TCACHE_COUNT = 0x290, 64, 7


def thread_cache(data: bytes, user: int) -> int | None:
    """The bytes a thread's cache holds, when the chunk at ``user`` is one's bookkeeping
    (every count at most 7, a bin's head set exactly when its count is not 0), else None."""
    counts = struct.unpack_from(f"<{TCACHE_BINS}H", data, user)
    heads = struct.unpack_from(f"<{TCACHE_BINS}Q", data, user + 2 * TCACHE_BINS)
    if not any(counts) and not any(heads):
        return 0
    for n, head in zip(counts, heads, strict=True):
        if n > TCACHE_COUNT or (n == 0) != (head == 0) or (head and not 0x10000 < head < 1 << 47):
            return None
    return sum(n * (32 + 16 * i) for i, n in enumerate(counts))


def tcache_key(heaps: list[tuple[bytes, list[tuple[int, int]]]]) -> bytes | None:
    """The process's tcache key: the commonest second word of small chunks marked in use whose
    value cannot be a user-space pointer (the key is random, 64 bits)."""
    seen: collections.Counter = collections.Counter()
    for data, found in heaps:
        for pos, size in found[:-1]:
            word = data[pos + 24:pos + 32]
            if size <= TCACHE_MAX_CHUNK and len(word) == 8 and struct.unpack("<Q", word)[0] >= 1 << 48:
                seen[word] += 1
    return seen.most_common(1)[0][0] if seen else None


def kind_of(mem: Memory, data: bytes, user: int) -> str:
    for offset in (8, 24):  # ob_type of an object, then of one after the collector's 16 bytes
        if user + offset + 8 <= len(data):
            name = mem.type_name(struct.unpack_from("<Q", data, user + offset)[0])
            if name:
                return name
    head = data[user:user + 16]
    if len(head) >= 8 and EPOCH_LO < struct.unpack_from("<d", head)[0] < EPOCH_HI:
        return "buffer:epoch-doubles"
    if head and all(32 <= c < 127 or c in (9, 10) for c in head):
        return "buffer:text"
    return "buffer"


def census(pid: int) -> list[Heap]:
    mem = Memory(pid)
    try:
        read = [(name, data, chunks(data)) for name, start, end in mem.heaps()
                for data in [mem.read(start, end - start)]]
        read = [(name, data, found) for name, data, found in read if found]
        tkey = tcache_key([(data, found) for _, data, found in read])
        out = []
        for name, data, found in read:
            heap = Heap(name, top=found[-1][1])
            for (pos, size), (after, _) in zip(found, found[1:], strict=False):
                if not struct.unpack_from("<Q", data, after + 8)[0] & 1:  # the next chunk's PREV_INUSE
                    heap.free += size
                    continue
                if size <= TCACHE_MAX_CHUNK and data[pos + 24:pos + 32] == tkey:
                    heap.cached += size
                    continue
                if size == TCACHE_STRUCT_CHUNK and (held := thread_cache(data, pos + 16)) is not None:
                    heap.caches.append(held)
                key = (kind_of(mem, data, pos + 16), size >> 10)
                heap.in_use += size
                heap.kinds[key] += size
                heap.counts[key] += 1
            out.append(heap)
        return out
    finally:
        mem.close()


def mib(n: int) -> str:
    return f"{n / 2 ** 20:.2f} MiB"


def show(heaps: list[Heap], top: int) -> None:
    for h in heaps:
        print(f"{h.name}: in use {mib(h.in_use)}, free {mib(h.free)}, in threads' caches {mib(h.cached)}, "
              f"top chunk {mib(h.top)}")
        if h.caches:
            held = sorted(h.caches, reverse=True)
            print(f"    threads' caches kept here: {len(held)}, KiB each: {' '.join(str(n >> 10) for n in held)}")
        by_kind: collections.Counter = collections.Counter()
        for (kind, _), n in h.kinds.items():
            by_kind[kind] += n
        for kind, n in by_kind.most_common(top):
            print(f"    {n >> 10:8d} KiB  {kind}")


def changes(before: list[Heap], after: list[Heap], top: int) -> None:
    old = {h.name: h for h in before}
    for h in after:
        was = old.get(h.name, Heap(h.name))
        print(f"{h.name}: in use {mib(was.in_use)} -> {mib(h.in_use)}, free {mib(was.free)} -> {mib(h.free)}, "
              f"in threads' caches {mib(was.cached)} -> {mib(h.cached)}, top chunk {mib(was.top)} -> {mib(h.top)}")
        if h.caches:
            print(f"    threads' caches, KiB each: {' '.join(str(n >> 10) for n in sorted(was.caches, reverse=True))}"
                  f" -> {' '.join(str(n >> 10) for n in sorted(h.caches, reverse=True))}")
        keys = set(was.kinds) | set(h.kinds)
        moved = sorted(keys, key=lambda k: -abs(h.kinds[k] - was.kinds[k]))
        for key in moved[:top]:
            delta = h.kinds[key] - was.kinds[key]
            if delta:
                chunks_were, chunks_are = was.counts[key], h.counts[key]
                print(f"    {delta / 1024:+9.1f} KiB  {key[0]} ({key[1]} KiB chunks: {chunks_were} -> {chunks_are})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pid", type=int)
    parser.add_argument("--then", type=float, default=0.0, help="look again after this many seconds")
    parser.add_argument("--top", type=int, default=12, help="rows per heap")
    args = parser.parse_args(argv)
    first = census(args.pid)
    if not first:
        print(f"no glibc heap found in process {args.pid}", file=sys.stderr)
        return 1
    show(first, args.top)
    if args.then > 0:
        time.sleep(args.then)
        print(f"\n-- {args.then:g} s later: what changed most")
        changes(first, census(args.pid), args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
