"""What "decisions rest on files that exist" costs: re-listing before a size or floor pass.

Figures (each from this run, best of ``--repeat``):
* a size pass's re-check of one changed flat folder of ``--files`` segments (the live
  folder of a capped templated stream), with ``os.listdir`` of that folder as the anchor;
* the re-check of ``--streams`` streams x 30 unchanged date folders (fstat only);
* the per-tick free-space measurement over all those folders (index.devices() + statvfs).

Usage: ``python bench/retention_verify.py [--files 20000] [--streams 100] [--dir /var/tmp]``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config.model import RecordingsConfig  # noqa: E402
from agent.recordings.disk import measure_below  # noqa: E402
from agent.recordings.index import SegmentIndex  # noqa: E402
from agent.recordings.verify import Verifier  # noqa: E402


def best(repeat: int, fn) -> float:
    """The fastest of ``repeat`` runs, in milliseconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def build(root: Path, files: int, streams: int) -> None:
    old = time.time() - 86400
    cam = root / "cam-000"
    cam.mkdir(parents=True)
    for i in range(files):
        (cam / f"cam-000_{i:07d}.ts").touch()
    for s in range(1, streams):
        for day in range(30):
            folder = root / f"cam-{s:03d}" / f"2026-11-{day + 1:02d}"
            folder.mkdir(parents=True)
            (folder / "a.ts").touch()
            os.utime(folder / "a.ts", (old, old))
            os.utime(folder, (old, old))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        root = tmp / "rec"
        build(root, args.files, args.streams)
        index, verifier = SegmentIndex(root), Verifier()
        index.scan_all()
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        live = root / "cam-000"
        live_fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)

        def changed() -> None:
            os.utime(live, None)  # a new segment arrived: the folder must be listed again
            verifier.verify(root_fd, index, ["cam-000"])

        others = [f"cam-{s:03d}" for s in range(1, args.streams)]
        verifier.verify(root_fd, index, others)
        anchor = best(args.repeat, lambda: os.listdir(live_fd))
        print(f"os.listdir of a {args.files}-file folder (anchor): {anchor:.1f} ms")
        print(f"re-check of that folder, changed: {best(args.repeat, changed):.1f} ms")
        print(f"re-check of {len(others) * 30} unchanged date folders: "
              f"{best(args.repeat, lambda: verifier.verify(root_fd, index, others)):.1f} ms")
        print(f"per-tick free-space measurement over {len(others) * 30 + 1} folders: "
              f"{best(args.repeat, lambda: measure_below(root, RecordingsConfig(), index.devices())):.2f} ms")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
