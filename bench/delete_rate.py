"""Deletion rate of retention's executor (agent/recordings/delete.py ``delete_segments``), with
a plain ``os.unlink`` loop over the same files as the anchor.

Each run builds ``--files`` old 16-byte segments in 14 daily folders of one stream
under ``--dir``, then deletes them all; repeated ``--runs`` times, best run shown.
The figure is what the per-unlink re-check (the directory must still be the one
under the root) costs; to compare two trees with ``agent/recordings/delete.py``, point
PYTHONPATH at each.

Usage: ``python bench/delete_rate.py [--files 20000] [--runs 3] [--dir /var/tmp]``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from agent.recordings.delete import candidate, delete_segments


def build(root: Path, files: int) -> list:
    old, out = time.time() - 30 * 86400, []
    for i in range(files):
        day = f"2026-01-{1 + i % 14:02d}"
        d = root / "cam" / day
        d.mkdir(parents=True, exist_ok=True)
        name = f"cam_{i:07d}.ts"
        (d / name).write_bytes(b"x" * 16)
        os.utime(d / name, (old + i, old + i))
        out.append(candidate("cam", day, name, old + i, 16))
    return sorted(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp")
    args = ap.parse_args()
    ours, anchor = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            root = Path(tmp)
            doomed = build(root, args.files)
            started = time.perf_counter()
            outcome = delete_segments(root, doomed, now=time.time())
            ours.append(time.perf_counter() - started)
            assert len(outcome.deleted) == args.files
            doomed = build(root, args.files)
            started = time.perf_counter()
            for c in doomed:
                os.unlink(root / c.stream / c.dir / c.name)
            anchor.append(time.perf_counter() - started)
            shutil.rmtree(root / "cam")
    print(f"delete_segments: {args.files / min(ours):,.0f} files/s (best of {args.runs}); "
          f"anchor os.unlink loop: {args.files / min(anchor):,.0f} files/s; dir {args.dir}")


if __name__ == "__main__":
    main()
