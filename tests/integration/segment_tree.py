"""Trees of real segment files in FFmpeg's names and layout, and a process's RSS: shared by
the retention memory tests and bench/sweep_memory.py."""
from __future__ import annotations

import os
import time
from pathlib import Path

SEGMENT = 2.0  # seconds of media a segment: the files' mtimes are this far apart
TS_PACKET = 188


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def write_segment(folder: Path, name: str, mtime: float, size: int) -> None:
    """One segment of ``size`` bytes dated ``mtime``."""
    path = folder / name
    path.write_bytes(b"\x47" * size)  # MPEG-TS sync bytes: the index reads only names, sizes, mtimes
    os.utime(path, (mtime, mtime))


def plant(root: Path, ids: list[str], per_stream: int, runs: int = 3, size: int = 8 * TS_PACKET,
          pace: float = 0.0, age: float = 0.0) -> None:
    """``per_stream`` segments per stream in ``runs`` FFmpeg runs, dated up to ``age`` s ago,
    SEGMENT s apart, and each stream's playlist; ``pace``: files per second at most (the
    agent's watcher queue must not overflow)."""
    now = time.time() - age
    each = -(-per_stream // runs)
    written, t0 = 0, time.monotonic()
    for sid in ids:
        (root / sid).mkdir(exist_ok=True)
    for i in range(per_stream):
        run, seq = divmod(i, each)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now - (per_stream - run * each) * SEGMENT)) + "000Z"
        for sid in ids:
            write_segment(root / sid, f"{sid}_{stamp}_{seq:06d}.ts", now - (per_stream - i) * SEGMENT, size)
            written += 1
        if pace and written > pace * (time.monotonic() - t0):
            time.sleep(written / pace - (time.monotonic() - t0))
    for sid in ids:
        (root / sid / "index.m3u8").write_text("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n")
