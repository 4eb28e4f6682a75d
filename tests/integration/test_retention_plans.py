"""Retention deletes only what a policy the operator wrote asks for (issue 16, A.1-5):
real tmpfs mounts, real FFmpeg fMP4 output, the real watcher, the real agent and vasctl."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from agent.config import model as C

from .harness import BIN, CHEAP, config, wait_for
from .test_retention import DAY, make_cfg, plant, running, settle, until

pytestmark = pytest.mark.integration
MiB = 1 << 20
NOW = time.time()


@pytest.fixture
def mounts():
    """``mount(path, size)``: a real tmpfs, unmounted (innermost first) afterwards."""
    done: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        done.append(path)
        return path

    yield mount
    for path in reversed(done):
        subprocess.run(["umount", "-l", str(path)], check=False)


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def segments(directory: Path, prefix: str, n: int, *, age: float, size: int = MiB) -> list[Path]:
    """``n`` segments, the first ``age`` seconds old, each one second newer."""
    return [plant(directory / f"{prefix}_{i:03d}.ts", size, NOW - age + i) for i in range(n)]


def ballast(path: Path, size: int) -> None:
    """Space used by something that is not a segment (the OS, another program)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(b"\0" * size)


# -- 1: a floor the filesystem can never reach ------------------------------------------------
async def test_an_unreachable_floor_deletes_nothing_and_is_reported(tmp_path, mounts, caplog):
    root = mounts(tmp_path / "rec", "24m")
    kept = segments(root / "cam1", "cam1", 10, age=10 * DAY)
    cfg = make_cfg(root, {"cam1": {"retention": 30 * DAY}}, min_free=C.SpaceAmount(bytes=100 << 30))
    caplog.set_level(logging.WARNING, "vas.retention")
    async with running(cfg) as r:
        await r.enforce()
        await settle(r)
        assert all(p.exists() for p in kept), "a floor above the disk's size deleted footage"
        view = r.view()
        assert view["floor_unreachable"] == 1 and view["filesystems"][0]["floor_unreachable"]
        assert view["disk_pressure"]["passes"] == {"floor": 0, "emergency": 0}
        notes = r.update(cfg)  # what a reload answers and logs
        assert len(notes) == 1 and "can never be reached, so it is not enforced" in notes[0]
    assert "can never be reached" in caplog.text and "Lower min_free" in caplog.text


def test_check_warns_about_an_unreachable_floor(tmp_path, mounts):
    root = mounts(tmp_path / "rec", "24m")
    path = tmp_path / "streams.yaml"
    path.write_text(f"version: 1\nrecordings: {{root: {root}, min_free: 100GiB}}\n"
                    "streams: {cam1: {url: 'rtsp://h/'}}\n")
    out = subprocess.run([str(BIN / "vas-agent"), "--config", str(path), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "warning: recordings.min_free + min_free_hysteresis (100.0GiB + 1.2MiB) >= the size of the " \
           f"filesystem of {root} (24.0MiB): that floor can never be reached" in out.stderr


async def test_the_floor_keeps_the_newest_hour_unless_the_disk_is_about_to_be_full(tmp_path, mounts, caplog):
    root = mounts(tmp_path / "rec", "24m")
    old = segments(root / "cam1", "old", 4, age=2 * DAY)
    touched = plant(root / "cam1" / "old_touched.ts", MiB, NOW - 3 * DAY)
    young = segments(root / "cam1", "young", 9, age=600)
    cfg = make_cfg(root, {"cam1": {"retention": 30 * DAY}}, min_free=C.SpaceAmount(percent=40.0),
                   min_free_hysteresis=C.SpaceAmount(percent=5.0))
    caplog.set_level(logging.WARNING, "vas.retention")
    async with running(cfg) as r:
        assert touched.exists()
        os.utime(touched, (NOW - 60, NOW - 60))      # indexed as 3 days old, modified a minute ago
        ballast(root / "other" / "ballast.bin", 6 * MiB)  # 20 MiB used: free (4 MiB) below 40 %
        await r.enforce()
        await settle(r)
        assert not any(p.exists() for p in old) and all(p.exists() for p in young), \
            "the floor took segments of the newest hour while the disk was not about to be full"
        assert touched.exists(), "the floor judged a segment's age by a stale index"
        assert r.view()["disk_pressure"]["passes"]["floor"] == 1
        assert f"retention (disk): {root} had " in caplog.text and "deleted 4 segments (4.0MiB) of cam1" \
            in caplog.text and "segments younger than 1h are kept" in caplog.text
        # Now the disk is about to be full: the margin gives way, but only back to twice the threshold.
        from agent.recordings.disk import emergency_free
        total = os.statvfs(root).f_blocks * os.statvfs(root).f_frsize
        ballast(root / "other" / "ballast.bin", free(root) - emergency_free(total) // 2)
        await r.enforce()
        await settle(r)
        gone = [p for p in [touched, *young] if not p.exists()]
        assert len(gone) == 1, gone                          # 1 MiB: enough for twice the threshold
        assert free(root) >= 2 * emergency_free(total) and r.view()["disk_pressure"]["passes"]["emergency"] == 1
    assert "about to be full" in caplog.text


# -- 2: free space per filesystem -----------------------------------------------------------------
async def test_a_filesystem_is_relieved_only_by_segments_on_it(tmp_path, mounts):
    root = mounts(tmp_path / "rec", "20m")
    cam1 = mounts(root / "cam1", "20m")
    on_cam1 = segments(cam1, "cam1", 10, age=20 * DAY)                 # the oldest, on their own disk
    on_root = segments(root / "cam2", "cam2", 6, age=10 * DAY)
    ballast(root / "other" / "ballast.bin", 8 * MiB - 64 * 1024)       # root: ~6 MiB free, floor 8 MiB
    cfg = make_cfg(root, {"cam1": {"retention": 30 * DAY}, "cam2": {"retention": 30 * DAY}},
                   min_free=C.SpaceAmount(percent=40.0), min_free_hysteresis=C.SpaceAmount(percent=5.0))
    assert free(root) < 8 * MiB < free(cam1)
    async with running(cfg) as r:
        await r.enforce()
        await settle(r)
        assert all(p.exists() for p in on_cam1), "cam1's disk was not short of space"
        assert [p.exists() for p in on_root] == [False] * 3 + [True] * 3
        assert free(root) >= 9 * MiB
        assert len(r.view()["filesystems"]) == 2


# -- 3: fMP4 init segments ----------------------------------------------------------------------
def ffmpeg_fmp4(directory: Path, init: str, seconds: int) -> None:
    directory.mkdir(parents=True)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc=size=160x120:rate=10:duration={seconds}",
                    "-c:v", "libx264", "-g", "10", "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
                    "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", init,
                    "-hls_segment_filename", str(directory / "seg_%03d.m4s"), str(directory / "index.m3u8")],
                   check=True, timeout=60)


def playable(init: Path, segment: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    joined = tmp_path / "joined.mp4"
    joined.write_bytes(init.read_bytes() + segment.read_bytes())
    return subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
                           str(joined)], capture_output=True, text=True, timeout=30)


async def test_an_fmp4_init_segment_goes_only_with_the_last_segment_that_needs_it(tmp_path):
    root = tmp_path / "rec"
    cam = root / "cam1"
    ffmpeg_fmp4(cam, "header.mp4", 6)      # not called "init": found through the playlist's EXT-X-MAP
    init, segs = cam / "header.mp4", sorted(cam.glob("seg_*.m4s"))
    assert 'EXT-X-MAP:URI="header.mp4"' in (cam / "index.m3u8").read_text() and len(segs) >= 5
    for age, path in zip(range(10, 0, -1), [init, *segs]):  # as written over days: the init first
        os.utime(path, (NOW - age * DAY, NOW - age * DAY))
    cfg = make_cfg(root, {"cam1": {"retention": (10 - 3.5) * DAY}})
    async with running(cfg) as r:
        await settle(r)
        left = sorted(cam.glob("seg_*.m4s"))
        assert left == segs[3:] and init.exists(), "the init file went before the segments that need it"
        probe = playable(init, left[0], tmp_path)
        assert probe.returncode == 0 and probe.stdout.strip() == "h264", probe.stderr
        # A shorter retention takes every segment, and the init with the last of them.
        r.update(make_cfg(root, {"cam1": {"retention": DAY}}))
        await until(lambda: not init.exists(), 10)
        await settle(r)
        assert not list(cam.glob("*.m4s")) and (cam / "index.m3u8").exists()


# -- 4: renamed and removed streams ----------------------------------------------------------------
@pytest.mark.slow
def test_a_renamed_stream_keeps_its_recordings_as_long_as_its_retention_said(agent_factory):
    def files(sid: str, *days: int) -> list[Path]:
        return [plant(agent.recordings / sid / f"{sid}_{d}.ts", 100, NOW - d * DAY) for d in days]

    orphans = {"orphan_retention": "60d"}
    agent = agent_factory({**config({"lobby": {**CHEAP, "recording": {"retention": 0}},
                                     "hall": {**CHEAP, "recording": {"retention": "90d"}}}), "recordings": orphans})
    lobby, hall = files("lobby", 400, 30, 20, 10, 1), files("hall", 120, 80, 10, 1)
    mine = files("operator-copy", 90, 1)        # a folder no stream ever had: orphan_retention
    renamed = files("lobby-main", 40, 35)       # not configured yet: an orphan, kept 60 days
    agent.start()
    agent.wait_all("live", ["lobby", "hall"])
    wait_for(lambda: not mine[0].exists() and not hall[0].exists(), 20, "the start's retention pass")
    assert all(p.exists() for p in lobby + hall[1:] + mine[1:] + renamed)
    agent.write_config({**config({"lobby-main": {**CHEAP, "recording": {"retention": "30d"}}}),
                        "recordings": orphans})
    out = agent.vasctl("reload")
    assert out.returncode == 0, out.stderr
    # The reload's retention pass ran: lobby-main's own 30 days took its oldest file (the
    # newest of a running stream always stays: it may be the one being written).
    wait_for(lambda: not renamed[0].exists(), 20, "the reload's retention pass")
    assert all(p.exists() for p in lobby), "a renamed keep-forever stream lost its archive"
    assert all(p.exists() for p in hall[1:]), "hall's orphans kept 60 days, not the 90 it had"
    assert (f"warning: recordings of removed stream lobby (5 segments, 500B) stay in {agent.recordings}/lobby "
            "and are kept for ever (retention 0)") in out.stderr
    assert "recordings of removed stream hall (3 segments, 300B)" in out.stderr
    assert "each is deleted when it is 90 days old (reason orphan)" in out.stderr
    assert "reload: recordings of removed stream lobby" in agent.log()
    assert agent.snapshot()["config"]["last_reload"]["warnings"]
    assert "last reload: recordings of removed stream lobby" in agent.vasctl("status").stdout
    agent.stop()
    again = files("lobby-main", 50)
    agent.start()  # the memory survives a restart: lobby is still kept for ever, hall 90 days
    wait_for(lambda: not again[0].exists(), 20, "the start's retention pass")
    assert all(p.exists() for p in lobby + hall[1:])


# -- 5: a stale index ----------------------------------------------------------------------------
async def test_size_decisions_rest_on_files_that_exist(tmp_path):
    root, away = tmp_path / "rec", tmp_path / "away"
    away.mkdir()
    first = segments(root / "cam1", "cam1", 10, age=3600)
    cfg = make_cfg(root, {"cam1": {"retention": 30 * DAY, "max_size": 10 * MiB}})
    async with running(cfg) as r:
        assert r.index.stats("cam1")[:2] == (10, 10 * MiB) and all(p.exists() for p in first)
        for p in first[7:]:
            shutil.move(p, away / p.name)          # moved out of the root
        for p in first[5:7]:
            p.unlink()                             # deleted behind retention's back
        for i in range(5):                         # five new segments: real usage 10 MiB, the cap
            new = root / "cam1" / f"new_{i}.ts"
            new.write_bytes(b"\0" * MiB)
            await until(lambda n=new.name: any(c.name == n for it in r.index.oldest_first("cam1") for c in it))
            await r.enforce()
            await settle(r)
        assert all(p.exists() for p in first[:5]), "segments deleted to make room that was already free"
        assert r.index.stats("cam1")[:2] == (10, 10 * MiB)
