"""The mechanics of safe deletion on real files (issue 16, items 7-9): a directory moved
out of the root mid-pass, wall-clock steps, and inotify overflow at any log level; long
runs' segment numbers, errors per file (EROFS), and concurrent deletions and cleanups,
one of them beside a reload that removes a stream."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent.config import model as config_mod
from agent.config.model import RecordingConfig, StreamConfig
from agent.recordings.delete import candidate, delete_segments, keeper, plan_age
from agent.recordings.index import SegmentIndex
from agent.recordings.service import Retention
from agent.recordings.wallclock import ClockSteps

from .test_retention import make_cfg, plant, settle, until

pytestmark = pytest.mark.integration
DAY = 86400.0
OLD = time.time() - 30 * DAY
COUNT = 20_000


@contextlib.asynccontextmanager
async def started_with_small_queue(cfg, knob: Path | None, saved: str | None):
    """Retention whose inotify instance has a 64-event queue (the knob is restored at once:
    other processes on this host create instances too); ``knob`` None: the host's queue."""
    r = Retention(cfg, is_running=lambda sid: False, on_change=lambda sid: None)
    if knob is not None:
        knob.write_text("64\n")  # applies to inotify instances created from now on
    try:
        await r.start()
    finally:
        if knob is not None and saved is not None:
            knob.write_text(saved)
    try:
        await asyncio.wait_for(r.ready.wait(), 30)
        await settle(r)
        yield r
    finally:
        await r.close()


def candidates(root: Path, sid: str, dir_rel: str = "") -> list:
    here = root / sid / dir_rel
    files = sorted(here.iterdir(), key=lambda p: p.name)
    return [candidate(sid, dir_rel, p.name, p.stat().st_mtime, p.stat().st_size) for p in files]


@pytest.mark.parametrize("at", [0, 1, 63, 67])  # around dirfd.STRICT_EVERY (64)
def test_a_directory_moved_out_mid_pass_loses_nothing_outside_the_root(tmp_path, at):
    """Item 7: the cached directory fd follows a move; nothing may go once it left the root."""
    root, outside = tmp_path / "rec", tmp_path / "elsewhere"
    for i in range(200):
        plant(root / "cam1" / "2020-01-01" / f"s{i:04d}.ts", mtime=OLD + i)
    doomed = candidates(root, "cam1", "2020-01-01")
    calls = []

    def hook(c) -> None:
        calls.append(c)
        if len(calls) == at + 1:  # right before the (at+1)-th unlink: an operator's mv
            os.rename(root / "cam1" / "2020-01-01", outside)

    outcome = delete_segments(root, doomed, now=time.time(), before_unlink=hook)
    assert len(outcome.deleted) == at
    assert len(list(outside.iterdir())) == 200 - at, "files outside the root were deleted"
    assert len(outcome.gone) == 200 - at and outcome.errors == 0


def test_a_directory_swapped_for_another_mid_pass_is_not_deleted_from(tmp_path):
    """Item 7, sibling: moved out and a new directory of the same name made in its place."""
    root, outside = tmp_path / "rec", tmp_path / "elsewhere"
    for i in range(20):
        plant(root / "cam1" / f"s{i:04d}.ts", mtime=OLD + i)
    doomed = candidates(root, "cam1")

    def hook(c) -> None:
        if c.name == "s0005.ts":
            os.rename(root / "cam1", outside)
            for i in range(20):
                plant(root / "cam1" / f"s{i:04d}.ts", mtime=OLD + i)

    outcome = delete_segments(root, doomed, now=time.time(), before_unlink=hook)
    assert len(outcome.deleted) == 5 and len(list(outside.iterdir())) == 15
    assert len(list((root / "cam1").iterdir())) == 20, "a new directory's files were not planned"


def test_a_file_written_a_second_ago_survives_a_step_up_and_back(tmp_path):
    """Item 8: +1 h, then -1 h ten minutes later; the shift estimate moves a fresh file an
    hour into the future, and the executor must still see that it is fresh."""
    root = tmp_path / "rec"
    real_now = time.time()
    fresh = plant(root / "cam1" / "fresh.ts", mtime=real_now - 1)
    future = plant(root / "cam1" / "future.ts", mtime=real_now + 600)
    old = plant(root / "cam1" / "old.ts", mtime=OLD)
    wall = [real_now - 601.0]
    mono = [0.0]
    steps = ClockSteps(wall=lambda: wall[0], mono=lambda: mono[0])
    wall[0], mono[0] = wall[0] + 1 + 3600, 1.0
    steps.check()
    wall[0], mono[0] = wall[0] + 600 - 3600, 601.0
    steps.check()
    assert len(steps.steps) == 2 and abs(wall[0] - real_now) < 1e-6
    doomed = candidates(root, "cam1")
    outcome = delete_segments(root, doomed, now=time.time(), shift=steps.shift)
    assert [c.name for c in outcome.deleted] == ["old.ts"]
    assert fresh.exists() and future.exists() and not old.exists()


@pytest.mark.slow
async def test_overflow_is_noticed_with_logging_at_error(tmp_path):
    """Item 9: at --log-level error watchdog's WARNING record never exists; the overflow
    must still be noticed (IN_Q_OVERFLOW itself) and the index rescanned."""
    root = tmp_path / "rec"
    knob = Path("/proc/sys/fs/inotify/max_queued_events")
    saved = knob.read_text()
    cfg = make_cfg(root, {"cam1": {"retention": 0.0}}, sweep_interval=3600.0)
    earlier = [plant(root / "cam1" / f"early{i}.ts") for i in range(5)]
    levels = {name: logging.getLogger(name).level for name in ("", "watchdog")}
    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger("watchdog").setLevel(logging.ERROR)  # as `--log-level error` leaves it
    try:
        async with started_with_small_queue(cfg, knob, saved) as r:
            with r.index.lock:
                r.index.streams.clear()  # stands for what the lost events would have told it
            # One process creating files in a loop: 2,000 did not always outrun watchdog's
            # reader here (0 overflows in 3 runs), 20,000 overflowed 64-80 times.
            subprocess.run(["touch", *(f"s{i}.ts" for i in range(COUNT))], cwd=root / "cam1", check=True)
            # Only a rescan finds the earlier files again: no event will ever name them.
            await until(lambda: r.index.stats("cam1")[0] == COUNT + len(earlier), timeout=60)
            assert r._watch is not None and getattr(r._watch, "overflows", 1) >= 1
    finally:
        knob.write_text(saved)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


async def test_a_symlinked_stream_directory_is_reported_once_per_start_and_reload(tmp_path, caplog):
    """Item 6: refused, logged at start and on reload (not on every sweep), in the views."""
    root, elsewhere = tmp_path / "rec", tmp_path / "bigdisk" / "cam"
    old = plant(elsewhere / "a.ts")
    root.mkdir()
    (root / "cam").symlink_to(elsewhere)
    (root / "stray").symlink_to(tmp_path)  # not a stream: still never cleaned, still said
    plant(root / "cam1" / "s.ts")
    (root / "cam1" / "2020-01-01").symlink_to(elsewhere)  # a symlinked date folder: the same silence
    cfg = make_cfg(root, {"cam": {"retention": DAY}, "cam1": {}})
    caplog.set_level(logging.WARNING, "vas.retention")

    def said() -> int:
        return sum("rec/cam is a symlink to" in r.getMessage() for r in caplog.records)

    async with started_with_small_queue(cfg, None, None) as r:
        assert said() == 1 and r.unsafe == {"cam": "symlink, retention not applied",
                                            "stray": "symlink, retention not applied",
                                            "cam1/2020-01-01": "symlink, retention not applied"}
        assert any("1 symlink(s) inside" in rec.getMessage() and "cam1 (2020-01-01)" in rec.getMessage()
                   for rec in caplog.records)
        assert r.stream_view("cam")["unsafe"] == "symlink, retention not applied"
        assert r.stream_view("cam1")["unsafe"] is None
        assert r.view()["unsafe_directories"] == r.unsafe
        await r._rescan("sweep")
        assert said() == 1, "a sweep repeats nothing"
        r.update(cfg)
        await until(lambda: said() == 2)
        await settle(r)
    assert old.exists()


@pytest.mark.parametrize("at", [1, 5, 63])  # between the whole-path walks (every dirfd.STRICT_EVERY)
def test_a_stream_folder_moved_out_and_symlinked_back_mid_pass_loses_nothing_outside(tmp_path, at):
    """`mv cam1 /other/cam1 && ln -s /other/cam1 cam1` on the same filesystem during a pass: the
    path from the root reaches the same date folder through the symlink, but it is outside now."""
    root, other = tmp_path / "rec", tmp_path / "other"
    other.mkdir()
    for i in range(100):
        plant(root / "cam1" / "2020-01-01" / f"s{i:04d}.ts", mtime=OLD + i)
    doomed = candidates(root, "cam1", "2020-01-01")
    calls = []

    def hook(c) -> None:
        calls.append(c)
        if len(calls) == at + 1:  # right before the (at+1)-th unlink
            os.rename(root / "cam1", other / "cam1")
            os.symlink(other / "cam1", root / "cam1")

    outcome = delete_segments(root, doomed, now=time.time(), before_unlink=hook)
    assert len(list((other / "cam1" / "2020-01-01").iterdir())) == 100 - at, \
        "files outside the root were deleted through a symlinked stream folder"
    assert len(outcome.deleted) == at


def plant_run(directory: Path, sid: str, seqs: range, mtime: float = OLD) -> None:
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
    plant_run(tmp_path / "cam1", "cam1", range(999_998, 1_000_002))
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
        plant_run(stuck, "stuck", range(5))
        plant_run(tmp_path / "fine", "fine", range(5))
        subprocess.run(["mount", "-o", "remount,ro", str(stuck)], check=True)
        index = SegmentIndex(tmp_path)
        index.scan_all()
        doomed = age_plan(index, "stuck", running=False) + age_plan(index, "fine", running=False)
        outcome = delete_segments(tmp_path, doomed, now=time.time())
        assert outcome.errors == 5 and {c.stream for c in outcome.deleted} == {"fine"}
        assert len(outcome.deleted) == 5 and len(list(stuck.iterdir())) == 5
    finally:
        subprocess.run(["umount", "-l", str(stuck)], check=False)


@pytest.mark.slow
def test_concurrent_deletions_of_one_directory_do_not_crash(tmp_path):
    """Defect 9: files vanishing between listing and deletion are neither errors nor counted twice."""
    plant_run(tmp_path / "cam1", "cam1", range(2000))
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


@pytest.mark.slow
async def test_concurrent_cleanups_and_a_reload_removing_a_stream(tmp_path):
    """Defect 9: two cleanups at once, and a reload dropping a stream while the first one
    deletes: no KeyError, every file deleted and counted once."""
    for sid in ("a", "b"):
        plant_run(tmp_path / "rec" / sid, sid, range(3000))
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
