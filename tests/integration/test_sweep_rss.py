"""Retention's periodic sweep re-reads the whole recordings tree: over many sweeps of an
unchanged tree the agent's memory stays where the first left it (issue 21, item 9).

A real ``vas-agent`` with 20 configured streams, 23,000 real segment files in FFmpeg's
names and layout on a tmpfs, and ``recordings.sweep_interval`` at its floor (10 s).
bench/sweep_memory.py prints the same figure at any size.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from .harness import CHEAP, AgentProcess, config, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STREAMS, PER_STREAM = 20, 1150
SWEEP = 10.0
#: RSS allowed above the level after the first sweep, after five more.  Measured (bench/sweep_memory.py,
#: 23k segments): 0.05-0.15 MiB over those five; a sweep that kept a copy of the index, or
#: a Python object per segment, would add 0.5 MiB or more each time.
BOUND_KIB = 768


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def plant(root: Path, ids: list[str]) -> None:
    """PER_STREAM segments a stream in three FFmpeg runs, 2 s apart up to now, and each playlist."""
    now = time.time()
    for sid in ids:
        folder = root / sid
        folder.mkdir()
        for i in range(PER_STREAM):
            run, seq = divmod(i, -(-PER_STREAM // 3))
            path = folder / f"{sid}_20261128T{10 + run:02d}0000000Z_{seq:06d}.ts"
            path.write_bytes(b"\x47" * 1504)
            os.utime(path, (now - 2 * (PER_STREAM - i),) * 2)
        (folder / "index.m3u8").write_text("#EXTM3U\n")


def sweeps(agent: AgentProcess) -> int:
    return agent.log().count("recordings indexed (sweep)")


@pytest.fixture
def tmpfs_root(tmp_path: Path):
    root = tmp_path / "recordings"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(root)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.mark.timeout(180)
def test_sweeps_of_an_unchanged_tree_keep_rss_flat(tmp_path: Path, tmpfs_root: Path) -> None:
    ids = [f"cam{i:02d}" for i in range(STREAMS)]
    plant(tmpfs_root, ids)
    agent = AgentProcess(tmp_path, {**config({sid: dict(CHEAP) for sid in ids}),
                                    "recordings": {"sweep_interval": f"{SWEEP:g}s"}})
    agent.start()
    try:
        assert agent.proc is not None
        pid = agent.proc.pid
        wait_for(lambda: "recordings indexed (start)" in agent.log(), 60, "the first index")
        levels = []
        for k in range(6):
            done = sweeps(agent)
            wait_for(lambda: sweeps(agent) > done, SWEEP + 20, f"sweep {k + 1}")
            time.sleep(SWEEP / 2)  # settled, and as far from the next sweep as from the last
            levels.append(rss_kib(pid))
        assert f"recordings indexed (sweep): {STREAMS * PER_STREAM} segments" in agent.log()
        print(f"RSS after each sweep (MiB): {[round(v / 1024, 2) for v in levels]}")
        assert levels[-1] - levels[0] <= BOUND_KIB, (
            f"RSS rose {(levels[-1] - levels[0]) / 1024:.2f} MiB over 5 sweeps of an unchanged tree: {levels}")
    finally:
        assert agent.stop() == 0
