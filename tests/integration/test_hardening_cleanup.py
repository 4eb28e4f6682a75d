"""Regressions from the core review for cleanup: long runs' segment numbers, errors per
file (EROFS), concurrent cleanups, and a reload that removes a stream mid-cleanup."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent import config as config_mod
from agent.agent import Agent
from agent.config import RecordingConfig, StreamConfig
from agent.retention import cleanup_stream, plan_age_cleanup, scan, segment_key

pytestmark = pytest.mark.integration
DAY = 86400.0
OLD = time.time() - 30 * DAY


def plant(directory: Path, sid: str, seqs: range, mtime: float = OLD) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for seq in seqs:
        path = directory / f"{sid}_20200101T000000000Z_{seq:06d}.ts"
        path.write_bytes(b"x" * 100)
        os.utime(path, (mtime, mtime))


def test_segments_past_999999_are_segments_and_sort_after_it(tmp_path):
    assert segment_key("cam1", "cam1_20200101T000000000Z_1000000.ts") == ("20200101T000000000Z", 1000000)
    plant(tmp_path / "cam1", "cam1", range(999_998, 1_000_002))
    fd = os.open(tmp_path / "cam1", os.O_RDONLY | os.O_DIRECTORY)
    try:
        doomed = plan_age_cleanup(scan(fd, "cam1"), now=time.time(), max_age=DAY)
    finally:
        os.close(fd)
    # Oldest first, numerically; the newest (1000001) is never deleted.
    assert [s.sort_key[1] for s in doomed] == [999_998, 999_999, 1_000_000]


def test_an_undeletable_directory_does_not_stop_the_others(tmp_path):
    stuck = tmp_path / "stuck"
    plant(stuck, "stuck", range(5))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(stuck)], check=True)
    try:
        plant(stuck, "stuck", range(5))
        subprocess.run(["mount", "-o", "remount,ro", str(stuck)], check=True)
        outcome = cleanup_stream(tmp_path, "stuck", now=time.time(), max_age=DAY)
        assert outcome.errors == 4 and outcome.deleted == []  # EROFS for each, counted, skipped
    finally:
        subprocess.run(["umount", "-l", str(stuck)], check=False)


def test_concurrent_cleanups_of_one_directory_do_not_crash(tmp_path):
    plant(tmp_path / "cam1", "cam1", range(2000))
    outcomes, errors = [], []

    def run() -> None:
        try:
            outcomes.append(cleanup_stream(tmp_path, "cam1", now=time.time(), max_age=DAY))
        except Exception as exc:  # the old code: FileNotFoundError from stat
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sum(len(o.deleted) for o in outcomes) == 1999  # each file counted once; the newest kept
    assert len(list((tmp_path / "cam1").iterdir())) == 1


async def test_a_reload_removing_a_stream_during_a_cleanup(tmp_path):
    streams = {sid: StreamConfig(id=sid, url="rtsp://h/", recording=RecordingConfig(retention=DAY))
               for sid in ("a", "b")}
    for sid in streams:
        plant(tmp_path / "rec" / sid, sid, range(3000))
    cfg = config_mod.Config(path=tmp_path / "s.yaml", sha256="x", node=config_mod.NodeConfig(runtime_dir=tmp_path),
                            recordings_root=tmp_path / "rec", streams=streams)
    agent = Agent(cfg)
    task = asyncio.create_task(agent.cleanup(None, dry_run=False))
    await asyncio.sleep(0)  # cleanup of "a" is now running in its thread
    agent.cfg = dataclasses.replace(cfg, streams={"a": streams["a"]})  # what a reload's _apply does
    result = await asyncio.wait_for(task, 30)
    assert list(result["streams"]) == ["a"] and result["deleted_count"] == 2999
