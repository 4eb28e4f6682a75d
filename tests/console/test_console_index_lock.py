"""The console's index questions must not hold the retention index's lock for long: the agent's
event loop takes that lock too (status every second, ``/index/{id}/known`` for every segment a
viewer fetches), so a month-long ``/index/{id}/segments`` built under it stalled the whole agent
for seconds.  A real SegmentIndex of packed folders, the query in a real thread, as the control
route runs it."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from agent.recordings import query
from agent.recordings.index import SegmentIndex
from agent.recordings.pack import DirSegments

T0 = 1_790_000_000.0
DAY = 43_200  # 2 s segments


def month_index(days: int) -> SegmentIndex:
    """One stream, ``days`` dated folders of 2 s MPEG-TS segments, as the scan packs them."""
    index = SegmentIndex(Path("/nonexistent"))
    index.streams["big"] = {
        f"2026-06-{d + 1:02d}": DirSegments((T0 + 2.0 * (d * DAY + i + 1), 500_000, f"big_{d * DAY + i:07d}.ts")
                                            for i in range(DAY))
        for d in range(days)}
    return index


class CpuHeld:
    """``index.lock``, keeping the most CPU any holder spent inside it (``time.thread_time``).
    Not the wall-clock time: on a loaded host a holder, or a waiter, is taken off the CPU for
    as long as the scheduler likes (a 0.33 s wait under CI's load), which says nothing of the code."""

    def __init__(self, lock) -> None:
        self._lock, self._mine, self.longest = lock, threading.local(), 0.0

    def __enter__(self) -> None:
        self._lock.acquire()
        self._mine.began = time.thread_time()

    def __exit__(self, *exc) -> None:
        self.longest = max(self.longest, time.thread_time() - self._mine.began)
        self._lock.release()


def longest_wait_while(index: SegmentIndex, work) -> tuple[float, object]:
    """The longest the lock made one ``index.stats()`` wait (what the agent's loop does) while ``work`` ran."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    worst = 0.0
    while thread.is_alive():
        began = time.perf_counter()
        index.stats("big")
        worst = max(worst, time.perf_counter() - began)
        time.sleep(0.001)
    thread.join()
    return worst, result[0]


def test_a_month_long_range_does_not_hold_the_index_lock():
    index = month_index(14)
    index.lock = held = CpuHeld(index.lock)  # type: ignore[assignment]
    began = time.perf_counter()
    worst, (found, truncated) = longest_wait_while(
        index, lambda: query.segments_between(index, "big", T0, T0 + 31 * 86400, 2.0))
    took = time.perf_counter() - began
    assert truncated and len(found) == query.MAX_SEGMENTS
    assert [s[1] for s in found[:2]] == [T0, T0 + 2.0] and found[-1][1] == T0 + 2.0 * (query.MAX_SEGMENTS - 1)
    print(f"\nlock held for at most {held.longest * 1000:.1f} ms of CPU; the loop's lock user waited at most "
          f"{worst * 1000:.1f} ms (wall); the query took {took:.2f} s")
    assert held.longest < 0.1, f"the query held the lock for {held.longest:.2f}s of CPU (query took {took:.2f}s)"


def test_the_newest_fmp4_segment_is_found_without_walking_the_folder():
    """FFmpeg writes the init first, so it is the oldest entry: the newest segment's init was found
    by a walk from the newest end, on the agent's event loop, for every snapshot."""
    n = 400_000
    index = SegmentIndex(Path("/nonexistent"))
    entries = [(T0, 900, "init.mp4")] + [(T0 + 2.0 * (i + 1), 500_000, f"fm_{i:06d}.m4s") for i in range(n)]
    index.streams["big"] = {"": DirSegments(entries)}
    took = []
    for _ in range(3):  # the best of three: a busy machine may pause any one call
        began = time.perf_counter()
        seg = query.newest(index, "big", T0 + 2.0 * (n + 1), 2.0)
        took.append(time.perf_counter() - began)
    assert seg is not None and seg[0] == f"fm_{n - 1:06d}.m4s" and seg[4] == "init.mp4"
    assert min(took) < 0.05, f"newest() took {min(took):.3f}s under the index lock"


def test_the_first_segment_after_a_restart_does_not_span_the_downtime(tmp_path):
    """FFmpeg restarted 1.5 s after its last segment (a reload, a crash and the backoff): the new run's
    first segment was dated from the old run's end, so its EXTINF, PROGRAM-DATE-TIME and the timeline
    claimed 3.5 s of video for 2 s of it and hid the downtime."""
    from exporter.playlists import timeline

    root = tmp_path / "rec"
    names = [(T0 + 2.0 * (i + 1), f"cam_20261128T100000000Z_{i:06d}.ts") for i in range(5)]
    restart = T0 + 10.0 + 1.5  # the old run's last segment ended at T0 + 10; 1.5 s without FFmpeg
    names += [(restart + 2.0 * (i + 1), f"cam_20261128T100011500Z_{i:06d}.ts") for i in range(3)]
    for mtime, name in names:
        path = root / "cam" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
        os.utime(path, (mtime, mtime))
    index = SegmentIndex(root)
    index.scan_all()
    found, _ = query.segments_between(index, "cam", T0, T0 + 60, 2.0)
    first_of_run = found[5]
    assert first_of_run[0].startswith("cam_20261128T100011500Z")
    assert (first_of_run[1], first_of_run[2]) == (restart, 2.0)
    assert [s[2] for s in found] == [2.0] * 8
    ranges, gaps = timeline(found, T0, T0 + 17.5)
    assert ranges == [[T0, T0 + 10.0], [restart, T0 + 17.5]] and gaps == [[T0 + 10.0, restart]]
    short = T0 + 10.0 + 0.5  # a restart quicker than a segment: the first segment starts at the old run's end
    index.upsert("cam", "", "cam_20261128T100010500Z_000000.ts", short + 1.0, 10)
    quick = [s for s in query.segments_between(index, "cam", T0, T0 + 60, 2.0)[0] if "100010500Z" in s[0]]
    assert [(s[1], s[2]) for s in quick] == [(T0 + 10.0, 1.5)]
