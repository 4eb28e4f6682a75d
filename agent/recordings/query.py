"""What the console asks of the retention index: a stream's segments in a time range, its
newest complete segment, whether it knows a name, and where its live playlist is.

A segment's start and duration are FFmpeg's own, from its live playlist
(agent/recordings/timing.py), when a playlist named it while the agent ran.  Else they come
from the mtimes (when FFmpeg finished writing each file): its start is the end of the one
before it in its folder when that one ended at most ``gap_limit`` earlier in the same FFmpeg
run (a continuous recording), else its end minus the configured segment duration (the first
after a gap; after a restart, not before the previous run's end: "since the one before" was
the downtime plus its own).  An FFmpeg starved of CPU writes in bursts, so mtimes misplace
segments by seconds under load: the playlist's figures are the ones to trust.
Names are relative to the stream's directory (``folder/name`` in dated folders); fMP4
segments carry the name of the init file in their folder.  Nothing walks the tree, and the
index lock is held only to copy what a question needs (the agent's event loop takes it too).
"""
from __future__ import annotations

import os
import stat
from bisect import bisect_left, bisect_right
from pathlib import Path

from agent.recordings.index import SegmentIndex
from agent.recordings.inits import looks_like_init
from agent.recordings.pack import DirSegments
from agent.recordings.timing import RunTimes

#: Segments one answer holds at most (55 h at 2 s); the caller then asks a shorter range.
MAX_SEGMENTS = 100_000
#: The live playlist FFmpeg writes in the stream's directory (agent/supervise/ffmpeg.py).
PLAYLIST = "index.m3u8"
#: A segment dated this far after now is a clock glitch's, not the newest one.
FUTURE_SLACK = 60.0
#: How long after its media ended a segment's file may be written (an FFmpeg starved of CPU
#: catching up): ranges are looked up this much wider by mtime.
MAX_LAG = 30.0
#: A folder's runs' timing, by run key (agent/recordings/timing.py): copies, read without the lock.
Times = dict[tuple, RunTimes]
#: ``(name, start, duration, size, init)``: tuples, not lists (a month is 100,000 of them; the
#: cyclic collector drops tuples of plain values from its lists, and walks every list each pass).
Segment = tuple[str, float, float, int, "str | None"]


def gap_limit(segment_duration: float) -> float:
    """Seconds between two segments' ends beyond which the recording had a gap (FFmpeg cuts at
    keyframes, so a segment may run a GOP longer than asked)."""
    return max(2.5 * segment_duration, segment_duration + 2.0)


def reach(segment_duration: float) -> float:
    """Seconds a segment's start may lie before its mtime: a gap's worth, and a late write's."""
    return gap_limit(segment_duration) + MAX_LAG


def _rel(dir_rel: str, name: str) -> str:
    return f"{dir_rel}/{name}" if dir_rel else name


def _init_of(d: DirSegments) -> str | None:
    """The init file of a folder's fMP4 segments (the newest init-named file in it): looked up
    by run, walked only when a long numbered run looks like inits (FFmpeg writes its init first,
    so a walk from the newest end crosses the whole folder)."""
    names = d.names_like(looks_like_init)
    if names is not None:
        return max(names, key=lambda n: d.find(n)[0], default=None)
    for i in range(len(d) - 1, -1, -1):
        if looks_like_init(d.name(i)):
            return d.name(i)
    return None


def _span(d: DirSegments, i: int, seg: float, times: Times) -> tuple[float, float]:
    """``(start, duration)`` of entry ``i``: its playlist's, else from the mtimes."""
    if times:
        gkey, number = d.run_of(i)
        run = times.get(gkey)
        known = run.get(number) if run is not None else None
        # A start earlier than a lookup by mtime reaches (a claimed duration of hours): the mtimes date it.
        if known is not None and known[0] >= d.mtimes[i] - reach(seg):
            return known
    mtime, limit = d.mtimes[i], gap_limit(seg)
    prev = d.mtimes[i - 1] if i else None
    if prev is not None and 0 < mtime - prev <= limit:  # continuous; a new run's first never spans the restart
        duration = mtime - prev if d.same_run(i, i - 1) else min(seg, mtime - prev)
    else:
        duration = seg
    return mtime - duration, duration


def _dir_range(dir_rel: str, d: DirSegments, start: float, end: float, seg: float,
               folder_init: str | None = "", times: Times | None = None) -> list[Segment]:
    """``[name, start, duration, size, init]`` of one folder's segments overlapping [start, end);
    ``folder_init`` the folder's init file when known ("": looked up in ``d``), used when the
    first segment in range is fMP4; ``times`` the folder's runs' timing."""
    furthest, out = reach(seg), []
    init: str | None = ""  # "" = not decided yet
    i = max(0, bisect_right(d.mtimes, start - MAX_LAG) - 1)
    while i < len(d):
        if d.mtimes[i] - furthest >= end:
            break
        name = d.name(i)
        i += 1
        if looks_like_init(name):
            continue
        first, duration = _span(d, i - 1, seg, times or {})
        if first + duration <= start or first >= end:
            continue
        if init == "":
            init = (_init_of(d) if folder_init == "" else folder_init) if name.endswith(".m4s") else None
        out.append((_rel(dir_rel, name), round(first, 3), round(duration, 3), d.sizes[i - 1],
                    _rel(dir_rel, init) if init else None))
    return out


def _window(d: DirSegments, start: float, end: float, seg: float, limit: int) -> tuple[DirSegments, str | None, bool]:
    """``(copy, init, capped)``: the entries of ``d`` :func:`_dir_range` may use for [start, end)
    (the one before, for its duration), at most ``limit`` + a few.  Call with the lock held."""
    lo = max(0, bisect_right(d.mtimes, start - MAX_LAG) - 2)
    hi = bisect_left(d.mtimes, end + reach(seg))
    capped = hi - lo > limit + 4
    return d.window(lo, min(hi, lo + limit + 4)), _init_of(d), capped


def _times(index: SegmentIndex, sid: str, dir_rel: str, window: DirSegments) -> Times:
    """The timing of a window's runs, copied under the lock for the numbers the window holds
    (found without the lock)."""
    bounds = window.run_bounds()
    with index.lock:
        return {gkey: run for gkey, (lo, hi) in bounds.items()
                if (run := index.timing.slice(sid, dir_rel, gkey, lo, hi)) is not None}


def segments_between(index: SegmentIndex, sid: str, start: float, end: float, segment_duration: float,
                     limit: int = MAX_SEGMENTS) -> tuple[list[Segment], bool]:
    """``(segments oldest first, truncated)``: each ``[name, start, duration, size, init]``.

    Under the index lock only copies are taken (the agent's event loop takes that lock too: a
    month of 2 s segments named under it stalled the loop for seconds); the work outside it is
    at most ``limit`` + a few segments per folder, and folders that start after the ``limit``-th
    segment found are not read."""
    with index.lock:
        windows = [(dir_rel, *_window(d, start, end, segment_duration, limit))
                   for dir_rel, d in index.streams.get(sid, {}).items() if len(d)]
    windows.sort(key=lambda w: w[1].mtimes[0] if len(w[1]) else 0.0)
    found: list[Segment] = []
    truncated = any(w[3] for w in windows)
    earliest = reach(segment_duration)
    for dir_rel, window, init, _ in windows:
        if len(found) > limit and len(window) and window.mtimes[0] - earliest > found[limit][1]:
            break  # every segment of this folder and the next starts after the cut
        found += _dir_range(dir_rel, window, start, end, segment_duration, init, _times(index, sid, dir_rel, window))
        if len(found) > limit:
            found.sort(key=lambda s: (s[1], s[0]))
    found.sort(key=lambda s: (s[1], s[0]))
    return found[:limit], truncated or len(found) > limit


def newest(index: SegmentIndex, sid: str, now: float, segment_duration: float) -> list | None:
    """The newest segment that is not an init (a future-dated one is skipped), as in
    :func:`segments_between`.  FFmpeg's ``temp_file`` flag means an indexed ``.ts`` is complete."""
    best: tuple[float, str, DirSegments, int] | None = None
    with index.lock:
        for dir_rel, d in index.streams.get(sid, {}).items():
            i = bisect_right(d.mtimes, now + FUTURE_SLACK) - 1
            while i >= 0 and looks_like_init(d.name(i)):
                i -= 1
            if i >= 0 and (best is None or d.mtimes[i] > best[0]):
                best = (d.mtimes[i], dir_rel, d, i)
        if best is None:
            return None
        _, dir_rel, d, i = best
        gkey, number = d.run_of(i)
        run = index.timing.slice(sid, dir_rel, gkey, number, number)
        first, duration = _span(d, i, segment_duration, {gkey: run} if run is not None else {})
        name = d.name(i)
        init = _init_of(d) if name.endswith(".m4s") else None
        return [_rel(dir_rel, name), round(first, 3), round(duration, 3), d.sizes[i],
                _rel(dir_rel, init) if init else None]


def knows(index: SegmentIndex, sid: str, name: str) -> int | None:
    """The size of ``name`` (relative to the stream's directory) when the index holds it, else None."""
    dir_rel, _, base = name.rpartition("/")
    with index.lock:
        d = index.streams.get(sid, {}).get(dir_rel)
        if d is None:
            return None
        i, _ = d.find(base)
        return d.sizes[i] if i >= 0 else None


def live_playlist(root: Path, sid: str) -> str | None:
    """``index.m3u8`` when the stream's directory holds it as a regular file (never a symlink)."""
    try:
        st = os.lstat(root / sid / PLAYLIST)
        parent = os.lstat(root / sid)
    except OSError:
        return None
    return PLAYLIST if stat.S_ISREG(st.st_mode) and stat.S_ISDIR(parent.st_mode) else None
