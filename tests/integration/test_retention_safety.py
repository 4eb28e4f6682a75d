"""The mechanics of safe deletion on real files (issue 16, items 7-9): a directory moved
out of the root mid-pass, wall-clock steps, and inotify overflow at any log level."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest

from agent.recordings.delete import candidate, delete_segments
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
