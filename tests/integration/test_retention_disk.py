"""A real full disk: a tmpfs recordings root, a real FFmpeg from a real RTSP camera, the
free-space floor freeing space, and ingest recovering by itself after ENOSPC."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from .harness import config, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MiB = 1 << 20
OLD = time.time() - 3 * 86400


@pytest.fixture
def tmpfs_root(tmp_path):
    root = tmp_path / "disk"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(root)], check=True)
    yield root
    subprocess.run(["umount", "-l", str(root)], check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(directory: Path, prefix: str, *, until_free: int, mtime: float = OLD) -> int:
    """Old 1 MiB segments until free space is below ``until_free`` (or the disk is full)."""
    directory.mkdir(parents=True, exist_ok=True)
    n = 0
    for n in range(64):
        if free_bytes(directory) < until_free:
            break
        path = directory / f"{prefix}_{n:06d}.ts"
        try:
            path.write_bytes(b"\0" * MiB)
        except OSError:  # ENOSPC: full
            path.unlink(missing_ok=True)
            break
        os.utime(path, (mtime + n, mtime + n))
    return n


def test_free_space_floor_frees_space_and_ingest_recovers(rtsp_camera, agent_factory, tmpfs_root):
    total = os.statvfs(tmpfs_root).f_blocks * os.statvfs(tmpfs_root).f_frsize
    floor, target = total * 25 // 100, total * 40 // 100
    streams = {"cam1": {"url": rtsp_camera.url("cam1"), "recording": {"retention": "30d"}}}
    agent = agent_factory({**config(streams), "recordings": {
        "root": str(tmpfs_root), "min_free": "25%", "min_free_hysteresis": "15%", "orphan_retention": "30d"}})
    planted = fill(tmpfs_root / "gone_cam", "old", until_free=floor // 2)  # an orphan: below the floor
    assert planted > 5 and free_bytes(tmpfs_root) < floor
    agent.start()
    wait_for(lambda: free_bytes(tmpfs_root) >= target - MiB, 20, "space freed up to the hysteresis target")
    left = sorted(p.name for p in (tmpfs_root / "gone_cam").glob("*.ts"))
    assert left == [f"old_{i:06d}.ts" for i in range(planted - len(left), planted)], "oldest went first"
    wait_for(lambda: agent.streams()["cam1"]["state"] in ("ready", "live"), 30, "cam1 recording")

    # Now the disk fills up completely under a running FFmpeg (old files of a stream
    # directory appear, as if copied in): FFmpeg hits ENOSPC, retention frees space,
    # and recording goes on without anyone restarting anything.
    fill(tmpfs_root / "cam1" / "restored", "cam1_restored", until_free=0, mtime=OLD)

    def segments() -> set[str]:
        return {p.name for p in (tmpfs_root / "cam1").glob("*.ts")}

    before = segments()
    wait_for(lambda: free_bytes(tmpfs_root) >= floor, 20, "the floor restored after ENOSPC")
    wait_for(lambda: segments() - before, 30, "new segments after the disk was full")
    # Figures reach the snapshot like progress counters: within a few seconds.
    rec = wait_for(lambda: (r := agent.streams()["cam1"]["recording"]).get("deleted", {}).get("disk") and r,
                   15, "disk deletions in the snapshot")
    assert rec["deleted"]["disk"]["segments"] > 0 and rec["segment_count"] > 0
    snap = agent.snapshot()
    fs = snap["recordings"]["filesystem"]
    assert fs["total_bytes"] == total and fs["free_bytes"] >= floor - MiB and 0 < fs["used_percent"] < 100
    assert "Traceback" not in agent.log()
