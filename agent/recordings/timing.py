"""Each segment's media timing, as FFmpeg's own playlists state it.

A segment's mtime says when FFmpeg finished writing it, not when its media began: an FFmpeg
starved of CPU writes several segments in one burst, and durations taken from the mtimes of
consecutive files then misplace them by seconds (a 4 s clip came out 6 s long).  FFmpeg's
live playlist names each new segment with its ``#EXTINF`` duration and (``program_date_time``,
as the templated command asks) its ``#EXT-X-PROGRAM-DATE-TIME``: its start on the wall clock,
counted in media time from the run's start.  The watcher reads the playlist each time FFmpeg
renames a new one into place (agent/recordings/watch.py), and :class:`Timing` keeps what it
said per run of names: a start (float64) and a duration (float32) per segment number, 12 bytes
a segment, kept apart from the index's packed entries so a rescan keeps them.  What no playlist
named (footage from before the agent started, an operator's command without a playlist) has no
entry here; the query then falls back on the mtimes (agent/recordings/query.py).
"""
from __future__ import annotations

import math
from array import array
from collections.abc import Callable
from datetime import datetime

from agent.recordings.pack import run_key

#: A run whose numbers jump further than this past what it holds starts again from there
#: (a playlist's numbers are consecutive; a jump is a new run reusing the name pattern).
MAX_JUMP = 100_000
_UNKNOWN = math.nan


def playlist_entries(text: str) -> list[tuple[str, float | None, float]]:
    """``(uri, start, duration)`` of each segment of an HLS media playlist, in order.

    ``start`` is the segment's ``EXT-X-PROGRAM-DATE-TIME`` (epoch seconds), else the one
    before it plus its duration when the playlist dated that one, else None.  A
    DISCONTINUITY breaks that chain.  Lines that do not parse are skipped."""
    out: list[tuple[str, float | None, float]] = []
    duration: float | None = None
    dated: float | None = None
    chain: float | None = None  # the next segment's start, from the one before
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXTINF:"):
            duration = _float(line[8:].split(",", 1)[0])
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            dated = _date(line[25:])
        elif line.startswith("#EXT-X-DISCONTINUITY") and not line.startswith("#EXT-X-DISCONTINUITY-"):
            chain = None
        elif line and not line.startswith("#"):
            if duration is not None and duration >= 0:
                start = dated if dated is not None else chain
                out.append((line, start, duration))
                chain = start + duration if start is not None else None
            duration = dated = None
    return out


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _date(text: str) -> float | None:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None  # no zone: not a point in time


class RunTimes:
    """One run's segments, by number from ``first``: start (NaN: not known) and duration."""

    __slots__ = ("first", "starts", "durations")

    def __init__(self, first: int) -> None:
        self.first = first
        self.starts, self.durations = array("d"), array("f")

    def set(self, seq: int, start: float, duration: float) -> None:
        if seq < self.first:  # an older number than held (rare: a playlist read late): grow at the front
            pad = self.first - seq
            self.starts[:0] = array("d", [_UNKNOWN] * pad)
            self.durations[:0] = array("f", [0.0] * pad)
            self.first = seq
        i = seq - self.first
        if i >= len(self.starts):
            pad = i + 1 - len(self.starts)
            self.starts.extend([_UNKNOWN] * pad)
            self.durations.extend([0.0] * pad)
        self.starts[i], self.durations[i] = start, duration

    def get(self, seq: int) -> tuple[float, float] | None:
        i = seq - self.first
        if 0 <= i < len(self.starts) and not math.isnan(self.starts[i]):
            return self.starts[i], float(self.durations[i])
        return None

    def drop_before(self, seq: int) -> None:
        """Forget numbers below ``seq`` (their segments are gone)."""
        n = min(seq - self.first, len(self.starts))
        if n > 0:
            del self.starts[:n], self.durations[:n]
            self.first += n


#: (stream, folder relative to the stream's directory, run key of the names)
RunId = tuple[str, str, tuple]


class Timing:
    """Media start and duration of segments named by playlists, per stream, folder and run.

    Callers hold the index's lock (the watcher's thread writes, the agent's loop reads)."""

    def __init__(self) -> None:
        self.runs: dict[RunId, RunTimes] = {}

    def learn(self, sid: str, dir_rel: str, entries: list[tuple[str, float | None, float]]) -> int:
        """Record a playlist's dated segments (URIs relative to ``dir_rel``); how many were new."""
        learned = 0
        for uri, start, duration in entries:
            if start is None:
                continue  # undated: the mtimes do as well
            where = _below(dir_rel, uri)
            if where is None:
                continue
            folder, name = where
            gkey, seq = run_key(name)
            run = self.runs.get((sid, folder, gkey))
            if run is None or abs(seq - run.first) > MAX_JUMP:
                run = self.runs[(sid, folder, gkey)] = RunTimes(seq)
            if run.get(seq) != (start, duration):
                run.set(seq, start, duration)
                learned += 1
        return learned

    def span(self, sid: str, dir_rel: str, name: str) -> tuple[float, float] | None:
        """``(start, duration)`` of a segment a playlist named, or None."""
        gkey, seq = run_key(name)
        run = self.runs.get((sid, dir_rel, gkey))
        return run.get(seq) if run is not None else None

    def slice(self, sid: str, dir_rel: str, gkey: tuple, lo: int, hi: int) -> RunTimes | None:
        """A copy of run ``gkey``'s numbers ``lo``..``hi`` (to be read without the lock), or None."""
        run = self.runs.get((sid, dir_rel, gkey))
        if run is None:
            return None
        a, b = max(lo - run.first, 0), max(hi + 1 - run.first, 0)
        out = RunTimes(run.first + a)
        out.starts, out.durations = run.starts[a:b], run.durations[a:b]
        return out

    def prune(self, lowest_number: Callable[[str, str, tuple], int | None]) -> None:
        """Forget runs no segment holds any more (``lowest_number`` None: the index's answer), and
        the numbers of each run below its oldest."""
        for rid in list(self.runs):
            sid, dir_rel, gkey = rid
            lowest = lowest_number(sid, dir_rel, gkey)
            if lowest is None:
                del self.runs[rid]
            else:
                self.runs[rid].drop_before(lowest)


def _below(dir_rel: str, uri: str) -> tuple[str, str] | None:
    """``(folder, name)`` of a playlist's URI inside the stream's directory, or None (absolute,
    a URL, ``..``, a query)."""
    if not uri or uri.startswith("/") or "://" in uri or "?" in uri or "\\" in uri:
        return None
    parts = [p for p in uri.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    folder = "/".join([*(dir_rel.split("/") if dir_rel else []), *parts[:-1]])
    return folder, parts[-1]
