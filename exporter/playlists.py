"""HLS playlists and the timeline, built from the agent's index answers (pure functions).

A segment is ``[name, start, duration, size, init]`` as agent/recordings/query.py gives it:
``name`` relative to the stream's directory, ``start`` unix seconds, ``init`` the fMP4 init
file's name or None.  Every URI a playlist carries is a route of this exporter
(``/v2/recordings/{id}/segments/{name}``), never a path on the node.
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Generator, Iterator, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

from agent.client import at_once

#: Two segments further apart than this (seconds) have a gap between them.
GAP_TOLERANCE = 0.5
#: A run's segment names: ``{prefix}_{start stamp}_{number}.ts``; a new prefix is a new FFmpeg run.
_RUN = re.compile(r"^(.*)_[0-9]+\.[A-Za-z0-9]+$")
_MAP_URI = re.compile(r'(URI=")([^"]*)(")')

Segment = Sequence  # [name, start, duration, size, init]


_PLAIN = re.compile(r"[A-Za-z0-9_.~/-]+")


def segment_uri(sid: str, name: str) -> str:
    """The exporter's URI of one segment (or init) of stream ``sid``."""
    return f"/v2/recordings/{quote(sid, safe='')}/segments/{_quoted(name)}"


def _quoted(name: str) -> str:
    return name if _PLAIN.fullmatch(name) else quote(name, safe="/")  # FFmpeg's names need no quoting


@functools.lru_cache(maxsize=64)
def _date(days: int) -> str:
    return datetime.fromtimestamp(days * 86400, UTC).strftime("%Y-%m-%d")


@functools.lru_cache(maxsize=256)
def _minute(minutes: int) -> str:
    """``2026-11-28T14:02:`` of a minute since the epoch."""
    days, rest = divmod(minutes, 1440)
    return f"{_date(days)}T{rest // 60:02d}:{rest % 60:02d}:"


def program_date_time(when: float) -> str:
    """``2026-11-28T14:02:00.000Z``: EXT-X-PROGRAM-DATE-TIME's form (RFC 3339, milliseconds, UTC).

    Arithmetic rather than strftime per segment, the minute's text shared: a 24 h playlist dates
    43,200 segments, 30 to a minute."""
    seconds, milli = divmod(round(when * 1000), 1000)
    minutes, second = divmod(seconds, 60)
    return f"{_minute(minutes)}{second:02d}.{milli:03d}Z"


def run_of(name: str) -> str:
    """The FFmpeg run a segment name belongs to (its name without the trailing number)."""
    match = _RUN.match(name.rpartition("/")[2])
    return match.group(1) if match else name


#: Segments per piece of a VOD playlist: the route sends a piece per turn of the event loop.
PART = 1000


def vod_parts(sid: str, segments: Sequence[Segment], every: int = PART) -> Iterator[str]:
    """A VOD playlist in pieces of ``every`` segments; an empty piece is a pause, work done.

    PROGRAM-DATE-TIME on every segment; DISCONTINUITY where playback must be told of one (a gap
    in time, a new FFmpeg run: its timestamps start again, or another init file); EXT-X-MAP
    whenever the init file changes (fMP4).  One pass, each segment's run found once.
    A month is 100,000 segments and ~0.2 s of CPU: in pieces, the event loop that serves
    /livez and /metrics (this one) answers between them instead of waiting for a thread."""
    target = 1
    for i in range(0, len(segments), every):
        target = max(target, *(math.ceil(s[2]) for s in segments[i:i + every]))
        yield ""
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{target}",
             "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-INDEPENDENT-SEGMENTS"]
    base = segment_uri(sid, "")
    end = run = init = None
    for k, (name, start, duration, _, seg_init) in enumerate(segments, 1):
        seg_run = run_of(name)
        if end is not None and (abs(start - end) > GAP_TOLERANCE or seg_run != run or seg_init != init):
            lines.append("#EXT-X-DISCONTINUITY")
        if seg_init and (end is None or seg_init != init):
            lines.append(f'#EXT-X-MAP:URI="{base}{_quoted(seg_init)}"')
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(start)}\n#EXTINF:{duration:.3f},\n"
                     f"{base}{_quoted(name)}")
        end, run, init = start + duration, seg_run, seg_init
        if k % every == 0:
            yield "\n".join(lines) + "\n"
            lines = []
    lines.append("#EXT-X-ENDLIST")
    yield "\n".join(lines) + "\n"


def vod(sid: str, segments: Sequence[Segment]) -> str:
    """The whole VOD playlist of :func:`vod_parts`."""
    return "".join(vod_parts(sid, segments))


def _local_name(uri: str) -> str | None:
    """A playlist URI that names a file in the stream's directory (or below), else None."""
    if not uri or "://" in uri or uri.startswith("/") or "?" in uri or "#" in uri or "\\" in uri:
        return None
    parts = uri.split("/")
    return uri if all(p not in ("", ".", "..") for p in parts) else None


def rewrite_live(sid: str, text: str) -> str:
    """FFmpeg's live ``index.m3u8`` with every URI turned into this exporter's segment route; a
    URI that leaves the stream's directory (absolute, ``..``, another host) is dropped with its tags."""
    out: list[str] = []
    pending: list[str] = []  # the tags of the next segment, dropped with it if its URI is refused
    for line in text.splitlines():
        line = line.rstrip("\r")
        if line.startswith("#EXT-X-MAP:"):
            match = _MAP_URI.search(line)
            name = _local_name(match.group(2)) if match else None
            if name is not None and match is not None:
                out.append(line[:match.start(2)] + segment_uri(sid, name) + line[match.end(2):])
        elif line.startswith("#") or not line.strip():
            (pending if line.startswith("#EXTINF") or line.startswith("#EXT-X-PROGRAM-DATE-TIME") else out).append(line)
        else:
            name = _local_name(line.strip())
            if name is not None:
                out += pending + [segment_uri(sid, name)]
            pending = []
    return "\n".join(out + pending) + "\n"


def timeline_steps(segments: Sequence[Segment], start: float, end: float,
                   every: int = PART) -> Generator[None, None, tuple[list[list[float]], list[list[float]]]]:
    """:func:`timeline` in pieces of ``every`` segments (exporter/turns.py)."""
    ranges: list[list[float]] = []
    for k, seg in enumerate(segments, 1):
        if k % every == 0:
            yield
        lo, hi = max(seg[1], start), min(seg[1] + seg[2], end)
        if hi <= lo:
            continue
        if ranges and lo - ranges[-1][1] <= GAP_TOLERANCE:
            ranges[-1][1] = max(ranges[-1][1], hi)
        else:
            ranges.append([lo, hi])
    gaps, cursor = [], start
    for lo, hi in ranges:
        if lo - cursor > GAP_TOLERANCE:
            gaps.append([cursor, lo])
        cursor = hi
    if end - cursor > GAP_TOLERANCE:
        gaps.append([cursor, end])
    return [[round(a, 3), round(b, 3)] for a, b in ranges], [[round(a, 3), round(b, 3)] for a, b in gaps]


def timeline(segments: Sequence[Segment], start: float, end: float) -> tuple[list[list[float]], list[list[float]]]:
    """``(ranges, gaps)`` of recorded time within [start, end], each ``[from, to]`` in unix seconds."""
    return at_once(timeline_steps(segments, start, end))
