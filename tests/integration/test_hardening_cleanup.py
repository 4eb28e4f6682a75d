"""Regressions from the core review (issue 6, defects 8 and 9) for cleanup: long runs'
segment numbers, errors per file (EROFS), concurrent cleanups, and a reload that removes
a stream mid-cleanup."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent.config import model as config_mod
from agent.config.model import RecordingConfig, StreamConfig
from agent.recordings.delete import delete_segments, keeper, plan_age
from agent.recordings.index import SegmentIndex
from agent.recordings.service import Retention

pytestmark = pytest.mark.integration
DAY = 86400.0
OLD = time.time() - 30 * DAY


def plant(directory: Path, sid: str, seqs: range, mtime: float = OLD) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for seq in seqs:
        path = directory / f"{sid}_20200101T000000000Z_{seq:06d}.ts"
        path.write_bytes(b"x" * 100)
        os.utime(path, (mtime, mtime))


def age_plan(index: SegmentIndex, sid: str, *, running: bool) -> list:
    import heapq
    with index.lock:
        newest = index.newest(sid) if running else None
        return plan_age(heapq.merge(*index.oldest_first(sid)), cutoff=time.time() - DAY,
                        keep=keeper(now=time.time(), newest=newest))


def test_segments_past_999999_are_segments_and_sort_after_it(tmp_path):
    """Defect 8: 7-digit sequence numbers are segments, ordered numerically, and the
    newest (being written) is kept."""
    plant(tmp_path / "cam1", "cam1", range(999_998, 1_000_002))
    index = SegmentIndex(tmp_path)
    index.scan_all()
    doomed = age_plan(index, "cam1", running=True)
    assert [c.name.split("_")[-1] for c in doomed] == ["999998.ts", "999999.ts", "1000000.ts"]


def test_an_undeletable_directory_does_not_stop_the_others(tmp_path):
    """Defect 9: EROFS on every file is counted per file and skipped; other streams still go."""
    stuck = tmp_path / "stuck"
    stuck.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(stuck)], check=True)
    try:
        plant(stuck, "stuck", range(5))
        plant(tmp_path / "fine", "fine", range(5))
        subprocess.run(["mount", "-o", "remount,ro", str(stuck)], check=True)
        index = SegmentIndex(tmp_path)
        index.scan_all()
        doomed = age_plan(index, "stuck", running=False) + age_plan(index, "fine", running=False)
        outcome = delete_segments(tmp_path, doomed, now=time.time())
        assert outcome.errors == 5 and {c.stream for c in outcome.deleted} == {"fine"}
        assert len(outcome.deleted) == 5 and len(list(stuck.iterdir())) == 5
    finally:
        subprocess.run(["umount", "-l", str(stuck)], check=False)


def test_concurrent_deletions_of_one_directory_do_not_crash(tmp_path):
    """Defect 9: files vanishing between listing and deletion are neither errors nor counted twice."""
    plant(tmp_path / "cam1", "cam1", range(2000))
    index = SegmentIndex(tmp_path)
    index.scan_all()
    doomed = age_plan(index, "cam1", running=True)
    outcomes, errors = [], []

    def run() -> None:
        try:
            outcomes.append(delete_segments(tmp_path, doomed, now=time.time()))
        except Exception as exc:  # the old code: FileNotFoundError from stat
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and sum(o.errors for o in outcomes) == 0
    assert sum(len(o.deleted) for o in outcomes) == 1999  # each file counted once; the newest kept
    assert len(list((tmp_path / "cam1").iterdir())) == 1


def _config(tmp_path: Path, ids: tuple[str, ...]) -> config_mod.Config:
    streams = {sid: StreamConfig(id=sid, url="rtsp://h/", recording=RecordingConfig(retention=DAY)) for sid in ids}
    return config_mod.Config(path=tmp_path / "s.yaml", sha256="x", node=config_mod.NodeConfig(runtime_dir=tmp_path),
                             recordings_root=tmp_path / "rec", streams=streams,
                             recordings=config_mod.RecordingsConfig(orphan_retention=0))


async def test_concurrent_cleanups_and_a_reload_removing_a_stream(tmp_path):
    """Defect 9: two cleanups at once, and a reload dropping a stream while the first one
    deletes: no KeyError, every file deleted and counted once."""
    for sid in ("a", "b"):
        plant(tmp_path / "rec" / sid, sid, range(3000))
    cfg = _config(tmp_path, ("a", "b"))
    holder: list[Retention] = []

    def on_change(sid: str) -> None:  # called while the first cleanup is deleting
        if holder[0].cfg is cfg:
            holder[0].cfg = dataclasses.replace(cfg, streams={"a": cfg.streams["a"]})  # what a reload's _apply does

    retention = Retention(dataclasses.replace(cfg, streams={}), is_running=lambda sid: False, on_change=on_change)
    holder.append(retention)
    await retention.start()  # with no stream configured (orphans kept forever): no automatic pass deletes
    try:
        await asyncio.wait_for(retention.ready.wait(), 30)
        for _ in range(100):  # the start's own pass (nothing configured: deletes nothing) is over
            if not retention._lock.locked() and all(t.done() for t in retention._tasks):
                break
            await asyncio.sleep(0.05)
        retention.cfg = cfg
        first = asyncio.create_task(retention.cleanup(None, retention_days=None, dry_run=False))
        second = asyncio.create_task(retention.cleanup(None, retention_days=None, dry_run=False))
        results = await asyncio.wait_for(asyncio.gather(first, second), 60)
    finally:
        await retention.close()
    assert sorted(results[0]) == ["a", "b"] and sorted(results[1]) == ["a"]
    assert [len(o.deleted) for _, o in results[0].values()] == [3000, 3000]
    assert len(results[1]["a"][1].deleted) == 0
    counted = sum(n for reasons in retention.deleted.values() for n, _ in reasons.values())
    assert counted == 6000 and retention.errors == 0
