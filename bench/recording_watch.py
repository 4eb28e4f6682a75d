"""CPU of one look of the recording watch, against the folder scan it replaced, by folder size.

What it measures
    A templated stream with a tee output (HLS recording + RTP into the SFU) has its recording
    watched every 2 s (``agent/supervise/stall.py`` watch_recording: a dropped recording output
    is reopened once the disk has room).  The watch looks at the playlist FFmpeg renames into
    place after each segment: one ``stat``.  Before, it scanned the folder for its newest file
    (``os.scandir`` + a ``stat`` per entry), so its cost grew with the footage kept: a folder
    holds retention / segment duration segments: 43,200 for a day of 2 s segments.
    For each --sizes folder (real empty segment files on the temp directory's file system) it
    prints the CPU per look, ours and the scan's, and what 20 streams' looks every 2 s cost as
    a share of one core.

How to run
    .venv/bin/python bench/recording_watch.py
    .venv/bin/python bench/recording_watch.py --sizes 1300,43200 --looks 200
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# _newest_mtime: the scan the recording watch did before (commands without progress still do it)
from agent.supervise.stall import GROWTH_CHECK_INTERVAL, _mtime, _newest_mtime  # noqa: E402

STREAMS = 20


def cpu_per_call(fn: Callable[[Path], float], arg: Path, looks: int) -> float:
    """CPU seconds of one ``fn(arg)``, the best of 3 rounds of ``looks`` calls."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(looks):
            fn(arg)
        best = min(best, (time.process_time() - start) / looks)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0,1300,10000,43200", help="segments in the folder, comma-separated")
    parser.add_argument("--looks", type=int, default=50, help="looks per round (3 rounds, best kept)")
    args = parser.parse_args(argv)
    print(f"{'segments':>9}  {'watch (stat)':>13}  {'scan (before)':>14}  {STREAMS} streams every "
          f"{GROWTH_CHECK_INTERVAL:g} s, % of a core: watch / scan")
    with tempfile.TemporaryDirectory(prefix="vas-recwatch-") as tmp:
        folder = Path(tmp) / "cam"
        folder.mkdir()
        (folder / "index.m3u8").write_text("#EXTM3U\n")
        made = 0
        for size in sorted(int(s) for s in args.sizes.split(",")):
            for i in range(made, size):
                (folder / f"cam_20261129T000000000Z_{i:06d}.ts").touch()
            made = max(made, size)
            ours = cpu_per_call(_mtime, folder / "index.m3u8", args.looks * 20)
            scan = cpu_per_call(_newest_mtime, folder, max(3, args.looks * 1300 // max(size, 1300)))
            rate = STREAMS / GROWTH_CHECK_INTERVAL
            print(f"{size:9d}  {ours * 1e6:10.1f} µs  {scan * 1e6:11.1f} µs  "
                  f"{ours * rate * 100:.3f} % / {scan * rate * 100:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
