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


def test_a_segment_left_out_breaks_the_chain_of_dates():
    # s5's EXTINF does not parse (or is missing): s6 was dated where s5 began, a segment early.
    for bad in ("#EXTINF:nan,\n", "#EXTINF:-1,\n", ""):
        text = f"#EXT-X-PROGRAM-DATE-TIME:2026-11-28T12:02:00Z\n#EXTINF:1,\ns4.ts\n{bad}s5.ts\n#EXTINF:1,\ns6.ts\n"
        assert playlist_entries(text) == [("s4.ts", T0, 1.0), ("s6.ts", None, 1.0)]


def test_a_date_without_a_zone_or_that_does_not_parse_dates_nothing():
    for date in ("2026-11-28T12:02:00", "yesterday", ""):
        assert playlist_entries(f"#EXT-X-PROGRAM-DATE-TIME:{date}\n#EXTINF:1,\na.ts\n") == [("a.ts", None, 1.0)]


def test_timing_keeps_what_playlists_said_per_run_and_only_inside_the_stream():
    t = Timing()
    entries = [("cam_A_000001.ts", T0, 1.0), ("cam_A_000002.ts", T0 + 1, 1.0), ("sub/cam_A_000003.ts", T0 + 2, 1.0),
               ("../other/cam_A_000004.ts", T0 + 3, 1.0), ("/abs/cam_A_000005.ts", T0 + 4, 1.0),
               ("http://h/cam_A_000006.ts", T0 + 5, 1.0), ("cam_A_000007.ts?x=1", T0 + 6, 1.0),
               ("cam_A_000008.ts", None, 1.0)]
    assert t.learn("cam", "", entries, INDEXED) == 3  # the undated one: neither indexed nor after a known one
    assert t.learn("cam", "", entries, INDEXED) == 0  # the next playlist repeats most: nothing new
    assert t.span("cam", "", "cam_A_000002.ts") == (T0 + 1, 1.0)
    assert t.span("cam", "sub", "cam_A_000003.ts") == (T0 + 2, 1.0)
    assert t.span("cam", "", "cam_A_000008.ts") is None
    assert t.span("cam", "", "cam_B_000002.ts") is None and t.span("other", "", "cam_A_000004.ts") is None
    assert len(t.runs) == 2  # ("cam", "", run A) and ("cam", "sub", run A): nothing outside the stream


def NOT_INDEXED(folder: str, name: str) -> None:
    return None


def INDEXED(folder: str, name: str) -> float | None:
    """Each of cam_A_000001..7 written as its media (T0 + n - 1, 1 s) ended; 8 not indexed yet."""
    n = int(name[-9:-3])
    return T0 + n if n < 8 else None


def test_only_segments_the_index_holds_are_learned():
    # A playlist naming files that do not exist (planted, or left by another tool) must not grow
    # the timing: runs' gaps are padded, so two numbers 100,000 apart cost 1.2 MB, and 200 such
    # names in one 18 KB playlist held 230 MB and the index lock for seconds.
    t = Timing()
    text = "".join(f"#EXT-X-PROGRAM-DATE-TIME:2026-11-28T12:02:00Z\n#EXTINF:1,\nr{k}_0.ts\n"
                   f"#EXTINF:1,\nr{k}_100000.ts\n" for k in range(200))
    assert t.learn("cam", "", playlist_entries(text), NOT_INDEXED) == 0
    assert t.runs == {}


@pytest.mark.parametrize("claim", [
    pytest.param(lambda i: T0 + i + (3600 if i >= 5 else 0), id="clock-stepped-back"),
    pytest.param(lambda i: T0 + i - (3600 if i >= 5 else 0), id="clock-stepped-ahead"),
    pytest.param(lambda i: i, id="booted-in-1970"),
    pytest.param(lambda i: T0 + i if i != 7 else 253_402_300_000.0, id="one-date-in-9999"),
])
def test_dates_far_from_the_files_lose_no_segment_from_a_range(tmp_path, claim):
    # A clock stepped under a running FFmpeg (its dates count on from its start), or one date
    # that is no date: the run's lead took every segment of the run out of every range.
    index = burst_index(tmp_path)
    learn(index, [(f"cam_R_{i:06d}.ts", claim(i), 1.0) for i in range(10)])
    found, _ = query.segments_between(index, "cam", T0 - 100, T0 + 100, 1.0)
    assert sorted(s[0] for s in found) == [f"cam_R_{i:06d}.ts" for i in range(10)]
    assert all(T0 - 1 <= s[1] <= T0 + 15 for s in found), found


def test_a_duration_no_lookup_reaches_is_not_served_for_every_range(tmp_path):
    # A segment claiming 1e9 s that ends at its file's mtime (a garbage EXTINF and date): the
    # timeline showed it over the whole range and 31 years before, and a clip (which takes a
    # segment whose middle is in its range) left it out.
    index = burst_index(tmp_path)
    learn(index, [(f"cam_R_{i:06d}.ts", T0 + i if i != 3 else T0 + 4 - 1e9, 1.0 if i != 3 else 1e9)
                  for i in range(10)])
    found, _ = query.segments_between(index, "cam", T0 - 100, T0 + 100, 1.0)
    assert sorted(s[0] for s in found) == [f"cam_R_{i:06d}.ts" for i in range(10)]
    assert all(s[2] <= 10 and s[1] >= T0 - 10 for s in found), found
    assert query.segments_between(index, "cam", T0 - 10_000_000, T0 - 9_000_000, 1.0)[0] == []


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


def learn(index: SegmentIndex, entries: list) -> int:
    """As the watcher does, one live playlist of FFmpeg's (6 entries) per new segment."""
    n = 0
    for end in range(1, len(entries) + 1):
        with index.lock:
            n += index.timing.learn("cam", "", entries[max(0, end - 6):end],
                                    lambda folder, name: index.mtime_of("cam", folder, name))
    return n


def test_a_burst_of_writes_misplaces_segments_when_only_mtimes_date_them(tmp_path):
    # The fallback, kept for footage no playlist named: under a burst it is wrong by seconds.
    found, _ = query.segments_between(burst_index(tmp_path), "cam", T0 + 5, T0 + 9, 1.0)
    assert len(found) != 4


def test_the_playlist_s_timing_puts_a_burst_s_segments_where_their_media_is(tmp_path):
    index = burst_index(tmp_path)
    learn(index, [(f"cam_R_{i:06d}.ts", T0 + i, 1.0) for i in range(10)])
    found, truncated = query.segments_between(index, "cam", T0 + 5, T0 + 9, 1.0)
    assert [(s[0], s[1], s[2]) for s in found] == [(f"cam_R_{i:06d}.ts", T0 + i, 1.0) for i in range(5, 9)]
    assert not truncated
    newest = query.newest(index, "cam", T0 + 30, 1.0)
    assert newest is not None and newest[:3] == ["cam_R_000009.ts", T0 + 9, 1.0]


def test_timing_of_deleted_runs_and_numbers_is_pruned(tmp_path):
    index = burst_index(tmp_path)
    learn(index, [(f"cam_R_{i:06d}.ts", T0 + i, 1.0) for i in range(10)])
    learn(index, [("cam_GONE_000001.ts", T0, 1.0)])
    for i in range(3):
        (index.root / "cam" / f"cam_R_{i:06d}.ts").unlink()
    index.scan_all()  # a sweep: the packed entries are rebuilt, the timing stays
    index.timing.prune(index.lowest_number)
    assert [rid[2][0] for rid in index.timing.runs] == ["cam_R_"]
    assert index.timing.span("cam", "", "cam_R_000002.ts") is None
    assert index.timing.span("cam", "", "cam_R_000003.ts") == (T0 + 3, 1.0)
    assert not math.isnan(index.timing.runs[("cam", "", ("cam_R_", ".ts", 6))].starts[0])


def test_an_undated_playlist_chains_each_segment_from_the_one_before(tmp_path):
    # An operator's command without program_date_time: EXTINF only.  The first segment ends at
    # its file's mtime; each next one starts where the one before ended, whenever it was written.
    index = burst_index(tmp_path)
    assert learn(index, [(f"cam_R_{i:06d}.ts", None, 1.0) for i in range(10)]) == 10
    found, _ = query.segments_between(index, "cam", T0 + 5, T0 + 9, 1.0)
    assert [(s[0], s[1], s[2]) for s in found] == [(f"cam_R_{i:06d}.ts", T0 + i, 1.0) for i in range(5, 9)]


def test_dates_that_run_ahead_of_the_files_are_taken_back_by_the_run_s_lead(tmp_path):
    # FFmpeg dates a run from when it opened its output, after probing the camera: its dates
    # can claim media that ended after the file holding it was written.  The run's largest such
    # lead comes off every start, so the run stays back to back.
    index = burst_index(tmp_path)
    learn(index, [(f"cam_R_{i:06d}.ts", T0 + i + 2.5, 1.0) for i in range(10)])
    found, _ = query.segments_between(index, "cam", T0, T0 + 20, 1.0)
    assert [s[1] for s in found] == [T0 + i for i in range(10)]


def test_names_that_count_on_across_restarts_keep_each_ffmpeg_run_s_lead(tmp_path):
    # -hls_start_number_source epoch: every FFmpeg run's numbers start at its start second, so
    # two runs 65 s apart are one run of names.  The second run's probe took 20 s (its dates
    # run 20 s ahead), the first's 2 s: one lead for both moved the first run 18 s early, out
    # of its own range.
    root = tmp_path / "rec"
    runs = [(1_795_867_320, 0, 2.0), (1_795_867_385, 65, 20.0)]  # (first number, start, lead)
    for first, off, _ in runs:
        for j in range(5):
            put(root / "cam" / f"seg{first + j}.ts", T0 + off + j + 1)
    index = SegmentIndex(root)
    index.scan_all()
    for first, off, lead in runs:
        learn(index, [(f"seg{first + j}.ts", T0 + off + j + lead, 1.0) for j in range(5)])
    found, _ = query.segments_between(index, "cam", T0, T0 + 5, 1.0)
    assert [(s[0], s[1]) for s in found] == [(f"seg{1_795_867_320 + j}.ts", T0 + j) for j in range(5)]
    found, _ = query.segments_between(index, "cam", T0 + 65, T0 + 70, 1.0)
    assert [s[1] for s in found] == [T0 + 65 + j for j in range(5)]
    run = index.timing.runs[("cam", "", ("seg", ".ts", 1))]
    run.drop_before(1_795_867_386)  # the first run and a segment of the second deleted
    assert run.breaks == [1_795_867_386] and run.leads == [20.0] and run.get(1_795_867_386) == (T0 + 66, 1.0)


def test_a_playlist_of_a_whole_run_costs_a_few_lookups_under_the_lock():
    # A command with hls_list_size 0 lists every segment of its run, and FFmpeg rewrites it for
    # each new one: each entry was a lookup in the index under its lock (2,545 in a folder of
    # 300,000 segments held it 1.8 s, every segment).  Only the last ones, and only what the
    # playlist before it did not name, are looked up.
    calls: list[str] = []

    def mtime_of(folder: str, name: str) -> float:
        calls.append(name)
        return T0 + int(name[6:12]) + 1

    t = Timing()
    entries = [(f"cam_R_{i:06d}.ts", T0 + i, 1.0) for i in range(2000)]
    t.learn("cam", "", entries, mtime_of)
    assert len(calls) <= 100
    assert t.span("cam", "", "cam_R_001999.ts") == (T0 + 1999, 1.0)
    calls.clear()
    assert t.learn("cam", "", [*entries, ("cam_R_002000.ts", T0 + 2000, 1.0)], mtime_of) == 1
    assert calls == ["cam_R_002000.ts"]


def test_an_undated_segment_rewritten_by_the_next_run_is_dated_again(tmp_path):
    # An operator's command that names segments seg0.ts, seg1.ts, ... and no date, restarted:
    # the new run rewrites seg0.ts; it ends at its new mtime, not where the old run had it.
    root = tmp_path / "rec"
    for i in range(3):
        put(root / "cam" / f"seg{i}.ts", T0 + i + 1)
    index = SegmentIndex(root)
    index.scan_all()
    learn(index, [(f"seg{i}.ts", None, 1.0) for i in range(3)])
    put(root / "cam" / "seg0.ts", T0 + 20)
    index.scan_all()
    learn(index, [("seg0.ts", None, 1.0)])
    assert index.timing.span("cam", "", "seg0.ts") == (T0 + 19, 1.0)
