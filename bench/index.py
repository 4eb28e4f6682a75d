"""The retention index alone: upsert cost by folder size, bytes per segment, cold first index.

Names are the agent's own in fleet mode, with 64-character stream ids:
``{id}_{YYYYmmddTHHMMSSmmmZ}-eN_%06d.ts`` (agent/supervise/ffmpeg.py's pattern, agent/supervise/stream.py's
``-eN``), a new run (start stamp, epoch) every ``RUN`` segments.

Figures (each from this run):
* upsert of the next new segment into a folder already holding 1k / 100k / 1M
  segments, through ``SegmentIndex.upsert`` (its lock included): p50 / p99 of ``--upserts``;
* bytes per segment, tracemalloc: steady (after building the 1M folder) and peak
  (while building it, the input streamed, never a list), next to the names' own length;
* the same figures for the first complete index of the tree below (all of the index's
  memory, streams and folders included);
* the first complete index of ``--files`` segments in ``--streams`` stream folders on
  disk, cold cache, next to ``os.walk`` + ``lstat`` of the same tree, cold cache,
  alternated ``--rounds`` times (each index in a fresh interpreter).

Usage: ``python bench/index.py [--files 1000000] [--streams 100] [--dir /work/tmp-perf-index] [--keep]``.
Needs root for ``drop_caches`` (without it the "cold" figures are warm, and say so).
Runs against whichever ``agent`` package is first on PYTHONPATH, any tree with
``agent/recordings/index.py``: it uses only ``DirSegments(entries)``, ``SegmentIndex.upsert``
and ``scan_all``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import drop_caches, walk, write_segment  # noqa: E402

from agent.recordings.index import DirSegments, SegmentIndex  # noqa: E402

ID = "site-0042-building-north-wing-floor-03-corridor-east-camera-{:04d}"  # 64 characters
RUN = 5000  # segments per FFmpeg run (a restart: new start stamp and epoch)
T0 = 1_790_000_000.0


def names(sid: str, n: int) -> Iterator[tuple[float, int, str]]:
    """``(mtime, size, name)`` of a stream's first ``n`` segments, 2 s apart."""
    for i in range(n):
        run, seq = divmod(i, RUN)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(T0 + run * RUN * 2)) + "000Z"
        yield T0 + 2.0 * i, 1_500_000 + i % 977, f"{sid}_{stamp}-e{run + 1}_{seq:06d}.ts"


def upserts(size: int, count: int) -> dict:
    """p50/p99 ms of upserting ``count`` new segments into a folder of ``size``."""
    sid = ID.format(1)
    index = SegmentIndex(Path("/nonexistent"))
    entries = list(names(sid, size + count))
    index.streams[sid] = {"": DirSegments(iter(entries[:size]))}
    samples = []
    for mtime, seg_size, name in entries[size:]:
        t = time.perf_counter()
        index.upsert(sid, "", name, mtime, seg_size)
        samples.append((time.perf_counter() - t) * 1000)
    assert index.stats(sid)[0] == size + count
    samples.sort()
    return {"p50": samples[len(samples) // 2], "p99": samples[int(len(samples) * 0.99)]}


def footprint(size: int) -> dict:
    """Bytes per segment of a ``size`` folder: steady and peak while building (tracemalloc)."""
    sid = ID.format(2)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t = time.monotonic()
    d = DirSegments(names(sid, size))
    took = time.monotonic() - t
    gc.collect()
    steady, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(d) == size
    return {"steady": (steady - base) / size, "peak": (peak - base) / size, "build_s": took,
            "name_len": len(next(names(sid, 1))[2])}


def build_tree(root: Path, files: int, streams: int) -> None:
    """``streams`` folders of ``files / streams`` segments each (16 bytes, mtime as named)."""
    per = files // streams
    for s in range(streams):
        sid = ID.format(s)
        d = root / sid
        d.mkdir(parents=True, exist_ok=True)
        for mtime, _, name in names(sid, per):
            write_segment(d / name, mtime)






def first_index(root: Path, memory: bool = False) -> tuple[int, float]:
    """SegmentIndex.scan_all in a fresh interpreter: (segments, seconds); with ``memory``,
    (segments, steady B/segment, peak B/segment) from tracemalloc instead (slower)."""
    code = ("import json, sys, time, tracemalloc; from pathlib import Path; "
            "from agent.recordings.index import SegmentIndex; "
            "m = sys.argv[2] == '1'; m and tracemalloc.start(); "
            "i = SegmentIndex(Path(sys.argv[1])); t = time.monotonic(); i.scan_all(); t = time.monotonic() - t; "
            "n = sum(i.stats(s)[0] for s in i.streams); c, p = tracemalloc.get_traced_memory() if m else (0, 0); "
            "print(json.dumps([n, c / n, p / n] if m else [n, t]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code, str(root), "1" if memory else "0"], capture_output=True,
                         text=True, timeout=1800, env=env)
    if res.returncode:
        raise SystemExit(res.stderr)
    return tuple(json.loads(res.stdout))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--sizes", default="1000,100000,1000000", help="folder sizes for the upsert figure")
    ap.add_argument("--upserts", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2, help="cold walk / cold index pairs")
    ap.add_argument("--dir", default="/work/tmp-perf-index", help="where the tree is built (a real disk)")
    ap.add_argument("--keep", action="store_true", help="keep the tree for the next run (default: delete it)")
    ap.add_argument("--no-disk", action="store_true", help="only the in-memory figures")
    args = ap.parse_args()
    for size in map(int, args.sizes.split(",")):
        u = upserts(size, args.upserts)
        print(f"upsert into a folder of {size:>9,}: p50 {u['p50']:.4f} ms, p99 {u['p99']:.4f} ms (target <= 0.1)")
    f = footprint(max(map(int, args.sizes.split(","))))
    print(f"bytes/segment ({f['name_len']}-character names): steady {f['steady']:.1f}, peak while building "
          f"{f['peak']:.1f} = {f['peak'] / f['steady']:.2f}x steady (target <= 64, peak <= 2x)")
    if args.no_disk:
        return
    root = Path(args.dir) / "recordings"
    try:
        if not root.exists() or sum(1 for _ in root.iterdir()) != args.streams:
            shutil.rmtree(root, ignore_errors=True)
            t = time.monotonic()
            build_tree(root, args.files, args.streams)
            took = time.monotonic() - t
            print(f"built {args.files:,} segments in {args.streams} folders in {took:.0f}s under {root}")
        for r in range(args.rounds):
            cold = drop_caches()
            n, floor = walk(root)
            drop_caches()
            m, ours = first_index(root)
            word = "cold" if cold else "WARM (no drop_caches)"
            print(f"round {r + 1}, {word}: os.walk + lstat {n:,} files {floor:.2f}s; first index {m:,} segments "
                  f"{ours:.2f}s = {ours / floor:.2f}x the walk (target <= 1.0x)")
        m, steady, peak = first_index(root, memory=True)
        print(f"first index of the tree, tracemalloc: {m:,} segments, steady {steady:.1f} B/segment, peak "
              f"{peak:.1f} = {peak / steady:.2f}x steady")
    finally:
        if not args.keep:
            shutil.rmtree(Path(args.dir), ignore_errors=True)


if __name__ == "__main__":
    main()
