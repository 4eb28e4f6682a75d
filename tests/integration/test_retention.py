"""Retention on a real file system with real inotify: what goes, what never goes, and the
index staying true (events, files deleted behind its back, overflow, removed streams)."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from pathlib import Path

import pytest

from agent.config import model as C
from agent.recordings.service import Retention

pytestmark = pytest.mark.integration
DAY = 86400.0
OLD = time.time() - 30 * DAY


def plant(path: Path, size: int = 100, mtime: float = OLD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime, mtime))
    return path


def make_cfg(root: Path, streams: dict[str, dict], **recordings) -> C.Config:
    built = {sid: C.StreamConfig(id=sid, url="rtsp://h/", recording=C.RecordingConfig(**rec))
             for sid, rec in streams.items()}
    rec_cfg = C.RecordingsConfig(**{"min_free": C.SpaceAmount(percent=0.0), **recordings})
    return C.Config(path=root.parent / "s.yaml", sha256="x", node=C.NodeConfig(runtime_dir=root.parent),
                    recordings_root=root, streams=built, recordings=rec_cfg)


@contextlib.asynccontextmanager
async def running(cfg: C.Config, is_running=lambda sid: False):
    changed: list[str] = []
    r = Retention(cfg, is_running=is_running, on_change=changed.append)
    await r.start()
    try:
        await asyncio.wait_for(r.ready.wait(), 30)
        await settle(r)
        yield r
    finally:
        await r.close()


async def settle(r: Retention) -> None:
    """Wait until no pass is running or pending."""
    for _ in range(200):
        await asyncio.sleep(0.05)
        if not r._lock.locked() and not any(not t.done() for t in r._tasks):
            return


async def until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_age_deletes_old_segments_anywhere_below_and_nothing_else(tmp_path):
    root, outside = tmp_path / "rec", tmp_path / "outside"
    old = [plant(root / "cam1" / "a.ts"), plant(root / "cam1" / "2020" / "01" / "b.mp4"),
           plant(root / "cam1" / "x" / "c.m4s"), plant(root / "cam1" / "x" / "d.mkv")]
    kept = [plant(root / "cam1" / "index.m3u8"), plant(root / "cam1" / "e.ts.tmp"),
            plant(root / "cam1" / "notes.txt"), plant(root / "cam1" / "x" / "live.m3u8"),
            plant(root / "cam1" / "fresh.ts", mtime=time.time() - 60), plant(root / "loose.ts"),
            plant(root / "cam2" / "other.ts"), plant(outside / "precious.ts"), plant(outside / "sub" / "deep.ts")]
    (root / "cam1" / "link.ts").symlink_to(outside / "precious.ts")             # a file symlink out of root
    (root / "cam1" / "linkdir").symlink_to(outside / "sub")                     # a directory symlink out of root
    (root / "cam1" / "intocam2").symlink_to(root / "cam2")                      # into another stream
    cfg = make_cfg(root, {"cam1": {"retention": DAY}, "cam2": {"retention": 0.0}}, orphan_retention=0.0)
    async with running(cfg) as r:
        assert not any(p.exists() for p in old)
        assert all(p.exists() for p in kept)
        assert (root / "cam1" / "link.ts").is_symlink() and (root / "cam1" / "linkdir").is_symlink()
        assert not (root / "cam1" / "2020").exists() and (root / "cam1" / "x").exists()  # emptied / kept
        assert r.deleted["cam1"]["age"] == [4, 400]
        view = r.stream_view("cam1")
        assert view["segment_count"] == 1 and view["total_bytes"] == 100  # fresh.ts only


async def test_size_cap_takes_the_oldest_until_under(tmp_path):
    root = tmp_path / "rec"
    files = [plant(root / "cam1" / f"d{i // 5}" / f"s{i}.ts", size=1000, mtime=OLD + i) for i in range(20)]
    cfg = make_cfg(root, {"cam1": {"retention": 0.0, "max_size": 7500}})
    async with running(cfg) as r:
        assert [p.exists() for p in files] == [False] * 13 + [True] * 7
        assert r.deleted["cam1"]["size"] == [13, 13000]
        # a reload lowering the cap applies in place
        r.update(dataclasses.replace(cfg, streams={"cam1": dataclasses.replace(
            cfg.streams["cam1"], recording=C.RecordingConfig(retention=0.0, max_size=3000))}))
        await settle(r)
        assert sum(p.exists() for p in files) == 3 and r.stream_view("cam1")["total_bytes"] == 3000


async def test_the_newest_segment_of_a_running_stream_is_kept(tmp_path):
    root = tmp_path / "rec"
    files = [plant(root / "cam1" / f"cam1_{i}.ts", mtime=OLD + i) for i in (999_999, 1_000_000, 1_000_001)]
    async with running(make_cfg(root, {"cam1": {"retention": DAY}}), is_running=lambda sid: True):
        assert [p.exists() for p in files] == [False, False, True]


async def test_a_copy_that_keeps_its_times_is_indexed_at_its_own_age(tmp_path):
    # cp -p, tar x, rsync --inplace -t: the file is written and closed, then its mtime is set.
    # Indexed at the close alone, an archive restored from 2020 would count as this minute's.
    root = tmp_path / "rec"
    async with running(make_cfg(root, {"cam1": {"retention": 0.0}})) as r:
        restored = plant(root / "cam1" / "restored.ts", size=10, mtime=time.time())
        await until(lambda: r.index.stats("cam1")[0] == 1)
        os.utime(restored, (OLD, OLD))
        await until(lambda: r.index.stats("cam1")[2] == OLD)


async def test_index_follows_new_files_and_deletions_behind_its_back(tmp_path):
    root = tmp_path / "rec"
    cfg = make_cfg(root, {"cam1": {"retention": 0.0}})
    async with running(cfg) as r:
        start = time.monotonic()
        plant(root / "cam1" / "new.ts", size=10, mtime=time.time())
        await until(lambda: r.index.stats("cam1")[0] == 1)
        assert time.monotonic() - start < 2
        tmp = plant(root / "cam1" / "next.ts.tmp", size=20, mtime=time.time())
        tmp.rename(root / "cam1" / "next.ts")  # FFmpeg's temp_file rename
        await until(lambda: r.index.stats("cam1")[:2] == (2, 30))
        (root / "cam1" / "new.ts").unlink()    # behind the index's back: found by the sweep
        plant(root / "cam1" / "d" / "e" / "f.ts", size=5, mtime=time.time())
        await until(lambda: r.index.stats("cam1")[:2] == (3, 35))
        import shutil
        shutil.rmtree(root / "cam1" / "d")       # a whole directory removed
        r._next_sweep = 0.0                      # the sweep is due
        await until(lambda: r.index.stats("cam1")[:2] == (1, 20))
        (root / "cam1" / "moved").mkdir()
        await asyncio.sleep(0.3)                 # watchdog watches the new folder
        (root / "cam1" / "next.ts").rename(root / "cam1" / "moved" / "next.ts")  # moves are events
        # A move is "gone" then "appeared": between the two the stream has no segment (no entry).
        await until(lambda: r.index.streams.get("cam1", {}).keys() == {"moved"})


async def test_a_removed_streams_directory_is_an_orphan(tmp_path):
    root = tmp_path / "rec"
    gone = [plant(root / "old" / "a.ts", mtime=time.time() - 10 * DAY), plant(root / "old" / "b.ts")]
    young = plant(root / "young" / "a.ts", mtime=time.time() - 2 * DAY)
    cfg = make_cfg(root, {"cam1": {}}, orphan_retention=7 * DAY)
    async with running(cfg) as r:
        assert not any(p.exists() for p in gone) and young.exists()
        assert r.deleted["old"]["orphan"][0] == 2 and r.view()["orphans"] == ["young"]


async def test_forced_rescan_repairs_a_wrong_index(tmp_path):
    root = tmp_path / "rec"
    plant(root / "cam1" / "a.ts")
    async with running(make_cfg(root, {"cam1": {"retention": 0.0}})) as r:
        r.index.streams.clear()  # as if events were lost
        r._watch.force_overflow()
        await until(lambda: r.index.stats("cam1")[0] == 1)


async def test_dry_run_lists_exactly_what_the_real_run_deletes(tmp_path):
    root = tmp_path / "rec"
    for i in range(50):
        plant(root / "cam1" / f"d{i % 3}" / f"s{i}.ts", mtime=time.time() - (i + 1) * DAY)
    plant(root / "cam1" / "note.txt")
    async with running(make_cfg(root, {"cam1": {"retention": 0.0}})) as r:
        dry = await r.cleanup(None, retention_days=10.5, dry_run=True)
        assert all((root / "cam1" / c.rel).exists() for c in dry["cam1"][1].deleted)
        real = await r.cleanup("cam1", retention_days=10.5, dry_run=False)
        assert [c.rel for c in dry["cam1"][1].deleted] == [c.rel for c in real["cam1"][1].deleted]
        assert len(real["cam1"][1].deleted) == 40 and r.deleted["cam1"]["manual"][0] == 40


async def test_a_file_vanishing_before_deletion_is_not_an_error(tmp_path):
    root = tmp_path / "rec"
    files = [plant(root / "cam1" / f"s{i}.ts") for i in range(10)]
    async with running(make_cfg(root, {"cam1": {"retention": 0.0}})) as r:
        r._watch.stop()  # no events: the index keeps believing in the files
        r._watch = None
        for p in files[:5]:
            p.unlink()
        result = await r.cleanup("cam1", retention_days=1, dry_run=False)
        _, outcome = result["cam1"]
        assert len(outcome.deleted) == 5 and len(outcome.gone) == 5 and outcome.errors == 0
        assert r.index.stats("cam1")[0] == 0


def test_an_unreadable_directory_is_skipped_not_fatal():
    """Root reads everything, so the scan runs as nobody: the unreadable folder is logged and
    skipped, the rest indexed."""
    import subprocess
    import sys
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="vas-unreadable-"))
    try:
        base.chmod(0o755)
        for rel in ("cam1/open/a.ts", "cam1/open/b.ts", "cam1/closed/c.ts", "cam2/d.ts"):
            plant(base / rel)
        for d in (base, base / "cam1", base / "cam1" / "open", base / "cam2"):
            d.chmod(0o755)
        (base / "cam1" / "closed").chmod(0o000)
        code = ("import sys; from pathlib import Path; from agent.recordings.index import SegmentIndex; "
                "i = SegmentIndex(Path(sys.argv[1])); i.scan_all(); print(i.stats('cam1')[0], i.stats('cam2')[0])")
        res = subprocess.run([sys.executable, "-c", code, str(base)], capture_output=True, text=True, timeout=60,
                             user=65534, group=65534, cwd=Path(__file__).resolve().parents[2])
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == ["2", "1"] and "cannot index cam1/closed" in res.stderr
    finally:
        (base / "cam1" / "closed").chmod(0o755)
        import shutil
        shutil.rmtree(base)


async def test_a_reload_that_shortens_the_intervals_applies_at_once(tmp_path):
    root = tmp_path / "rec"
    plant(root / "a" / "a-1.ts", mtime=time.time())
    cfg = make_cfg(root, {"a": {"retention": 86400.0}}, probe_interval=3600.0, sweep_interval=86400.0)
    async with running(cfg) as r:
        probes: list[float] = []
        find = r.answering.find

        async def counted():
            probes.append(time.monotonic())
            return await find()
        r.answering.find = counted  # type: ignore[method-assign]
        r.update(dataclasses.replace(cfg, recordings=dataclasses.replace(
            cfg.recordings, probe_interval=1.0, sweep_interval=10.0)))
        await until(lambda: len(probes) >= 2, timeout=8)  # every second, not in an hour
        assert r._next_sweep <= time.monotonic() + 10.0
