"""The console's parts that touch files and FFmpeg (issue 20), on real files: the agent's
index queries, opening below a root without a symlink, and one decode for many snapshot
requests with a real FFmpeg."""
from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from agent.nofollow import open_file_below
from agent.recordings import query
from agent.recordings.index import SegmentIndex
from exporter.snapshots import DecodeError, Snapshots

T0 = 1_795_874_520.0


def put(path: Path, mtime: float, data: bytes = b"x" * 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


@pytest.fixture
def index(tmp_path) -> SegmentIndex:
    """cam1: a run of 2 s segments with a gap; fm: an fMP4 folder with its init; a symlink."""
    root = tmp_path / "rec"
    for i in range(5):
        put(root / "cam1" / f"cam1_A_{i:06d}.ts", T0 + 2 * (i + 1))
    for i in range(3):
        put(root / "cam1" / f"cam1_B_{i:06d}.ts", T0 + 100 + 2 * (i + 1))
    put(root / "fm" / "2026-11-28" / "init.mp4", T0)
    for i in range(3):
        put(root / "fm" / "2026-11-28" / f"fm_{i:06d}.m4s", T0 + 2 * (i + 1))
    (root / "cam1" / "link.ts").symlink_to(root / "cam1" / "cam1_A_000000.ts")
    idx = SegmentIndex(root)
    idx.scan_all()
    return idx


def test_segments_of_a_range_are_dated_from_the_index_with_their_gap(index):
    found, truncated = query.segments_between(index, "cam1", T0, T0 + 200, 2.0)
    assert not truncated and [s[0] for s in found][:2] == ["cam1_A_000000.ts", "cam1_A_000001.ts"]
    assert [(s[1], s[2]) for s in found[:5]] == [(T0 + 2 * i, 2.0) for i in range(5)]
    assert (found[5][1], found[5][2]) == (T0 + 100, 2.0)  # the first after the gap: the configured duration
    assert len(found) == 8 and all(s[4] is None for s in found) and "link.ts" not in {s[0] for s in found}
    inside, _ = query.segments_between(index, "cam1", T0 + 3, T0 + 5, 2.0)
    assert [s[0] for s in inside] == ["cam1_A_000001.ts", "cam1_A_000002.ts"]
    assert query.segments_between(index, "cam1", T0, T0 + 200, 2.0, limit=3) == (found[:3], True)


def test_fmp4_segments_name_their_folders_init_which_is_no_segment_itself(index):
    found, _ = query.segments_between(index, "fm", T0 - 10, T0 + 10, 2.0)
    assert [(s[0], s[4]) for s in found] == [(f"2026-11-28/fm_{i:06d}.m4s", "2026-11-28/init.mp4") for i in range(3)]
    assert query.newest(index, "fm", T0 + 60, 2.0)[0] == "2026-11-28/fm_000002.m4s"
    assert query.knows(index, "fm", "2026-11-28/init.mp4") == 100


def test_the_index_knows_only_its_own_names(index):
    assert query.knows(index, "cam1", "cam1_A_000003.ts") == 100
    for name in ("link.ts", "../fm/2026-11-28/init.mp4", "cam1_A_000003.ts/", "nope.ts", ""):
        assert query.knows(index, "cam1", name) is None, name
    assert query.newest(index, "cam1", T0 + 1000, 2.0)[0] == "cam1_B_000002.ts"
    assert query.newest(index, "cam1", T0 + 50 - query.FUTURE_SLACK, 2.0)[0] == "cam1_A_000004.ts"
    assert query.newest(index, "nosuch", T0, 2.0) is None


def test_opening_below_a_root_follows_no_symlink(tmp_path):
    root = tmp_path / "rec"
    put(root / "cam1" / "a.ts", T0)
    (root / "cam1" / "link.ts").symlink_to(root / "cam1" / "a.ts")
    (root / "away").symlink_to(root / "cam1")
    os.mkfifo(root / "cam1" / "pipe.ts")
    fd = open_file_below(root, ["cam1", "a.ts"])
    os.close(fd)
    for parts in (["cam1", "link.ts"], ["away", "a.ts"], ["cam1", "..", "cam1", "a.ts"], ["cam1", "pipe.ts"],
                  ["cam1"], [], ["cam1", "nope.ts"], ["/etc", "passwd"]):
        with pytest.raises(OSError):
            os.close(open_file_below(root, parts))


@pytest.fixture(scope="module")
def segment(tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("seg") / "a.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "2",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-f", "mpegts", str(out)],
                   check=True, timeout=60)
    return out.read_bytes()


async def test_many_requests_share_one_ffmpeg_decode_and_then_the_cache(segment):
    snapshots, asked = Snapshots("ffmpeg", ttl=3.0), []

    async def newest():
        asked.append(1)
        await asyncio.sleep(0.05)

        async def load() -> bytes:
            return segment
        return "a.ts", load

    answers = await asyncio.gather(*(snapshots.get("cam1", newest) for _ in range(10)))
    assert snapshots.decodes == 1 and len(asked) == 1
    assert sorted(how for _, how in answers) == ["decoded"] + ["shared"] * 9
    assert all(jpeg[:2] == b"\xff\xd8" and jpeg == answers[0][0] for jpeg, _ in answers)
    assert (await snapshots.get("cam1", newest))[1] == "cached" and snapshots.decodes == 1


async def test_a_failed_decode_reaches_every_waiter_and_is_not_cached():
    snapshots = Snapshots("ffmpeg")

    async def newest():
        await asyncio.sleep(0.05)

        async def load() -> bytes:
            return b"not video" * 100
        return "bad.ts", load

    results = await asyncio.gather(*(snapshots.get("cam1", newest) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, DecodeError) for r in results) and snapshots.decodes == 1

    async def nothing():
        return None
    with pytest.raises(LookupError):
        await snapshots.get("cam2", nothing)
