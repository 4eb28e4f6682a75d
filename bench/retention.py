"""Retention's index and deletion at scale, with a plain os.walk + lstat pass as the anchor.

Layout (``--files`` N, ``--streams`` S, default 1,000,000 and 100):
``{root}/cam-NNN/YYYY-MM-DD/cam-NNN_20261110T000000000Z_SSSSSSS.ts``, N/S files of
16 bytes per stream, spread evenly over 14 daily folders, mtimes one per
segment interval over the last 14 days (so a 7-day retention expires half).

Figures (each from this run):
* os.walk + lstat of the whole tree, cold cache (``sync; echo 3 > drop_caches``);
* the time to the first complete index when retention starts, cold cache;
* RSS the index adds per segment;
* new segment (``.tmp`` renamed, as FFmpeg does) to its presence in the index;
* idle CPU over ``--idle`` seconds with the index loaded, and without retention;
* deletion throughput when a 7-day retention expires half the segments.

Usage: ``python bench/retention.py [--files 1000000] [--streams 100] [--dir /var/tmp]``.
Needs root for drop_caches (without it the "cold" figures are warm, and say so).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import drop_caches, walk, write_segment

DAYS = 14
DAY = 86400.0


def build(root: Path, files: int, streams: int, now: float) -> None:
    per = files // streams
    step = DAYS * DAY / per
    for s in range(streams):
        sid = f"cam-{s:03d}"
        for i in range(per):
            mtime = now - DAYS * DAY + i * step
            day = time.strftime("%Y-%m-%d", time.gmtime(mtime))
            d = root / sid / day
            if i == 0 or time.strftime("%Y-%m-%d", time.gmtime(mtime - step)) != day:
                d.mkdir(parents=True, exist_ok=True)
            write_segment(d / f"{sid}_20261110T000000000Z_{i:07d}.ts", mtime)






def child(root: Path, streams: int, idle: float, with_retention: bool) -> dict:
    """Runs in a fresh interpreter: the agent's retention alone, measured from inside."""
    import psutil

    from agent.config import model as C
    from agent.recordings.service import Retention
    proc = psutil.Process()
    cfg_streams = {f"cam-{s:03d}": C.StreamConfig(id=f"cam-{s:03d}", url="rtsp://h/",
                                                  recording=C.RecordingConfig(retention=0.0))
                   for s in range(streams)}
    cfg = C.Config(path=root / "s.yaml", sha256="x", node=C.NodeConfig(runtime_dir=root), recordings_root=root,
                   streams=cfg_streams, recordings=C.RecordingsConfig(min_free=C.SpaceAmount(percent=0.0)))

    async def main() -> dict:
        out: dict = {}
        if not with_retention:
            c0 = proc.cpu_times()
            await asyncio.sleep(idle)
            c1 = proc.cpu_times()
            return {"idle_cpu_percent": 100 * (c1.user + c1.system - c0.user - c0.system) / idle}
        rss0 = proc.memory_info().rss
        r = Retention(cfg, is_running=lambda sid: False, on_change=lambda sid: None)
        t = time.monotonic()
        await r.start()
        await r.ready.wait()
        out["index_seconds"] = time.monotonic() - t
        while r._lock.locked():
            await asyncio.sleep(0.01)
        import gc
        gc.collect()
        segments = sum(r.index.stats(sid)[0] for sid in list(r.index.streams))
        out["segments"] = segments
        out["rss_per_segment"] = (proc.memory_info().rss - rss0) / max(1, segments)
        out["new_segment_latency_ms"] = await latency(r, root)
        c0 = proc.cpu_times()
        await asyncio.sleep(idle)
        c1 = proc.cpu_times()
        out["idle_cpu_percent"] = 100 * (c1.user + c1.system - c0.user - c0.system) / idle
        week = {sid: C.StreamConfig(id=sid, url="rtsp://h/", recording=C.RecordingConfig(retention=7 * DAY))
                for sid in cfg_streams}
        import dataclasses
        r.cfg = dataclasses.replace(cfg, streams=week)
        t = time.monotonic()
        await r.enforce()
        took = time.monotonic() - t
        deleted = sum(v["age"][0] for v in r.deleted.values() if "age" in v)
        out.update(deleted=deleted, delete_seconds=took, deletions_per_second=deleted / took if took else None)
        await r.close()
        return out

    return asyncio.run(main())


async def latency(r, root: Path) -> float:
    """Median ms from a segment's rename into place to its presence in the index (20 tries)."""
    samples = []
    d = root / "cam-000" / "latency"
    d.mkdir(exist_ok=True)
    for i in range(20):
        before = r.index.stats("cam-000")[0]
        tmp = d / f"new_{i}.ts.tmp"
        tmp.write_bytes(b"x" * 16)
        t = time.monotonic()
        tmp.rename(d / f"new_{i}.ts")
        deadline = t + 5
        while r.index.stats("cam-000")[0] == before and time.monotonic() < deadline:
            await asyncio.sleep(0.0005)
        samples.append((time.monotonic() - t) * 1000)
    samples.sort()
    return samples[len(samples) // 2]


def run_child(root: Path, streams: int, idle: float, with_retention: bool) -> dict:
    here = Path(__file__).resolve()
    code = ("import json, sys; from pathlib import Path; sys.path[:0] = [%r, %r]; import bench.retention as b; "
            "print(json.dumps(b.child(Path(%r), %d, %r, %r)))" % (str(here.parents[1]), str(here.parent),
                                                                  str(root), streams, idle, with_retention))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
    if res.returncode:
        raise SystemExit(res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--dir", default="/var/tmp", help="where the tree is built (a real disk, not tmpfs)")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="vas-retention-bench-", dir=args.dir))
    root = base / "recordings"
    try:
        t = time.monotonic()
        build(root, args.files, args.streams, time.time())
        print(f"built {args.files} segments in {args.streams} streams x {DAYS} daily folders "
              f"in {time.monotonic() - t:.1f}s under {root}")
        cold = drop_caches()
        n, secs = walk(root)
        print(f"anchor: os.walk + lstat, {'cold' if cold else 'WARM (not root)'}: {n} files in {secs:.2f}s "
              f"({n / secs:,.0f} files/s)")
        drop_caches()
        r = run_child(root, args.streams, args.idle, True)
        base_cpu = run_child(root, args.streams, args.idle, False)["idle_cpu_percent"]
        print(f"index at start, {'cold' if cold else 'WARM'}: {r['segments']} segments in {r['index_seconds']:.2f}s "
              f"(target <= 10 s)")
        print(f"RSS added by the index: {r['rss_per_segment']:.1f} B/segment (target <= 64)")
        print(f"new segment -> index (median of 20): {r['new_segment_latency_ms']:.1f} ms")
        print(f"idle CPU over {args.idle:g}s: {r['idle_cpu_percent']:.3f}% with the index loaded, "
              f"{base_cpu:.3f}% without retention")
        print(f"deletion: {r['deleted']} expired segments in {r['delete_seconds']:.2f}s = "
              f"{r['deletions_per_second']:,.0f}/s (target >= 20,000/s)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
