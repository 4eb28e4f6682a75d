"""Segments' media timing from FFmpeg's playlists (agent/recordings/timing.py) and the range
queries that use it (agent/recordings/query.py): bursts of writes misplace nothing."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from agent.recordings import query
from agent.recordings.index import SegmentIndex
from agent.recordings.timing import RunTimes, Timing, playlist_entries

T0 = 1_795_867_320.0  # 2026-11-28T12:02:00Z

# What FFmpeg 5.1 writes with hls_flags program_date_time: EXTINF, then the date, then the URI.
FFMPEG = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:1
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXTINF:1.000000,
#EXT-X-PROGRAM-DATE-TIME:2026-11-28T12:02:07.000+0000
cam_20261128T120200000Z_000007.ts
#EXTINF:0.960000,
#EXT-X-PROGRAM-DATE-TIME:2026-11-28T12:02:08.000+0000
cam_20261128T120200000Z_000008.ts
"""


def test_ffmpeg_s_playlist_gives_each_segment_its_date_and_duration():
    assert playlist_entries(FFMPEG) == [("cam_20261128T120200000Z_000007.ts", T0 + 7, 1.0),
                                        ("cam_20261128T120200000Z_000008.ts", T0 + 8, 0.96)]


def test_undated_segments_follow_the_last_dated_one_until_a_discontinuity():
    text = """#EXTM3U
#EXT-X-PROGRAM-DATE-TIME:2026-11-28T12:02:00Z
#EXTINF:2.0,
a_1.ts
#EXTINF:2.5,
a_2.ts
#EXT-X-DISCONTINUITY
#EXTINF:2.0,
a_3.ts
#EXTINF:2.0,title with, commas
#EXT-X-PROGRAM-DATE-TIME:2026-11-28T13:00:00.500+01:00
a_4.ts
"""
    assert playlist_entries(text) == [("a_1.ts", T0, 2.0), ("a_2.ts", T0 + 2, 2.5), ("a_3.ts", None, 2.0),
                                      ("a_4.ts", T0 - 120 + 0.5, 2.0)]


@pytest.mark.parametrize("bad", ["#EXTINF:nan,\na.ts\n", "#EXTINF:x,\na.ts\n", "#EXTINF:-1,\na.ts\n",
                                 "a.ts\n", "#EXTINF:inf,\na.ts\n"])
def test_a_segment_without_a_usable_duration_is_left_out(bad):
    assert playlist_entries(bad) == []


def test_a_date_without_a_zone_or_that_does_not_parse_dates_nothing():
    for date in ("2026-11-28T12:02:00", "yesterday", ""):
        assert playlist_entries(f"#EXT-X-PROGRAM-DATE-TIME:{date}\n#EXTINF:1,\na.ts\n") == [("a.ts", None, 1.0)]


def test_timing_keeps_what_playlists_said_per_run_and_only_inside_the_stream():
    t = Timing()
    entries = [("cam_A_000001.ts", T0, 1.0), ("cam_A_000002.ts", T0 + 1, 1.0), ("sub/cam_A_000003.ts", T0 + 2, 1.0),
               ("../other/cam_A_000004.ts", T0 + 3, 1.0), ("/abs/cam_A_000005.ts", T0 + 4, 1.0),
               ("http://h/cam_A_000006.ts", T0 + 5, 1.0), ("cam_A_000007.ts?x=1", T0 + 6, 1.0),
               ("cam_A_000008.ts", None, 1.0)]
    assert t.learn("cam", "", entries) == 3
    assert t.learn("cam", "", entries) == 0  # the next playlist repeats most: nothing new
    assert t.span("cam", "", "cam_A_000002.ts") == (T0 + 1, 1.0)
    assert t.span("cam", "sub", "cam_A_000003.ts") == (T0 + 2, 1.0)
    assert t.span("cam", "", "cam_A_000008.ts") is None
    assert t.span("cam", "", "cam_B_000002.ts") is None and t.span("other", "", "cam_A_000004.ts") is None
    assert len(t.runs) == 2  # ("cam", "", run A) and ("cam", "sub", run A): nothing outside the stream


def test_a_run_grows_at_either_end_and_forgets_below_a_number():
    run = RunTimes(10)
    run.set(12, T0 + 2, 1.0)
    run.set(9, T0 - 1, 1.0)  # a playlist read late names an older one
    assert run.first == 9 and run.get(9) == (T0 - 1, 1.0) and run.get(12) == (T0 + 2, 1.0)
    assert run.get(10) is None and run.get(13) is None and run.get(8) is None
    run.drop_before(12)
    assert run.first == 12 and run.get(12) == (T0 + 2, 1.0) and run.get(9) is None
    run.drop_before(100)
    assert run.get(12) is None and len(run.starts) == 0


def put(path: Path, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 100)
    os.utime(path, (mtime, mtime))


def burst_index(tmp_path) -> SegmentIndex:
    """10 segments of 1 s, the last five written in one burst 4 s late (an FFmpeg starved of CPU)."""
    root = tmp_path / "rec"
    for i in range(10):
        put(root / "cam" / f"cam_R_{i:06d}.ts", T0 + i + 1 if i < 5 else T0 + 14 + i * 0.01)
    index = SegmentIndex(root)
    index.scan_all()
    return index


def test_a_burst_of_writes_misplaces_segments_when_only_mtimes_date_them(tmp_path):
    # The fallback, kept for footage no playlist named: under a burst it is wrong by seconds.
    found, _ = query.segments_between(burst_index(tmp_path), "cam", T0 + 5, T0 + 9, 1.0)
    assert len(found) != 4


def test_the_playlist_s_timing_puts_a_burst_s_segments_where_their_media_is(tmp_path):
    index = burst_index(tmp_path)
    index.timing.learn("cam", "", [(f"cam_R_{i:06d}.ts", T0 + i, 1.0) for i in range(10)])
    found, truncated = query.segments_between(index, "cam", T0 + 5, T0 + 9, 1.0)
    assert [(s[0], s[1], s[2]) for s in found] == [(f"cam_R_{i:06d}.ts", T0 + i, 1.0) for i in range(5, 9)]
    assert not truncated
    newest = query.newest(index, "cam", T0 + 30, 1.0)
    assert newest is not None and newest[:3] == ["cam_R_000009.ts", T0 + 9, 1.0]


def test_timing_of_deleted_runs_and_numbers_is_pruned(tmp_path):
    index = burst_index(tmp_path)
    index.timing.learn("cam", "", [(f"cam_R_{i:06d}.ts", T0 + i, 1.0) for i in range(10)])
    index.timing.learn("cam", "", [("cam_GONE_000001.ts", T0, 1.0)])
    for i in range(3):
        (index.root / "cam" / f"cam_R_{i:06d}.ts").unlink()
    index.scan_all()  # a sweep: the packed entries are rebuilt, the timing stays
    index.timing.prune(index.lowest_number)
    assert [rid[2][0] for rid in index.timing.runs] == ["cam_R_"]
    assert index.timing.span("cam", "", "cam_R_000002.ts") is None
    assert index.timing.span("cam", "", "cam_R_000003.ts") == (T0 + 3, 1.0)
    assert not math.isnan(index.timing.runs[("cam", "", ("cam_R_", ".ts", 6))].starts[0])
