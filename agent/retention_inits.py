"""fMP4 init segments: files other segments depend on go only with the last of them.

``-hls_segment_type fmp4`` writes one init file (``-hls_fmp4_init_filename``, default
``init.mp4``) that every ``.m4s`` needs to be played; it is written first, so it is
the oldest file and every policy would take it first.  An *init* is a file named by a
playlist's ``EXT-X-MAP:URI`` (playlists in the candidate's directory and the stream's
own), or an ``.mp4`` with ``init`` in its name.  It stays while any other segment of
its stream stays: an init is a few kilobytes, an unplayable archive is a loss.
"""
from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from .retention import Candidate, open_below
from .segment_index import SegmentIndex

_MAP = re.compile(rb'#EXT-X-MAP:[^\n]*?URI="([^"]+)"')
#: Playlists are read up to this size (a live playlist is a few kilobytes).
PLAYLIST_LIMIT = 4 << 20


def looks_like_init(name: str) -> bool:
    """FFmpeg's default naming and the usual variants (``init.mp4``, ``cam1_init_0.mp4``)."""
    return name.endswith(".mp4") and "init" in name.lower()


def mapped_inits(root_fd: int, sid: str, dir_rel: str) -> set[str]:
    """Paths (relative to the stream's directory) named by EXT-X-MAP in ``dir_rel``'s playlists."""
    out: set[str] = set()
    try:
        fd = open_below(root_fd, [sid, *(dir_rel.split("/") if dir_rel else [])])
    except OSError:
        return out
    try:
        with os.scandir(fd) as entries:
            playlists = [e.name for e in entries if e.name.endswith(".m3u8")]
        for name in playlists:
            try:
                pfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                continue
            with os.fdopen(pfd, "rb") as f:
                text = f.read(PLAYLIST_LIMIT)
            for uri in _MAP.findall(text):
                rel = _relative(dir_rel, uri.decode("utf-8", "surrogateescape"))
                if rel is not None:
                    out.add(rel)
    except OSError:
        pass  # unreadable: the name rule still applies
    finally:
        os.close(fd)
    return out


def _relative(dir_rel: str, uri: str) -> str | None:
    if "://" in uri or uri.startswith("/"):
        return None
    rel = posixpath.normpath(posixpath.join(dir_rel, uri.split("?")[0]))
    return None if rel.startswith("..") else rel


def hold_inits(plans: Iterable[list[Candidate]], *, inits: Callable[[str], set[str]],
               rels: Callable[[str], Iterable[str]]) -> None:
    """Remove init files from ``plans`` (in place) unless every other segment of their stream goes too.

    ``inits(sid)``: the stream's init paths from playlists (asked only for streams with a
    non-``.ts`` candidate: MPEG-TS segments need no init); ``rels(sid)``: its indexed segments.
    """
    plans = list(plans)
    doomed: dict[str, set[str]] = {}
    for plan in plans:
        for c in plan:
            doomed.setdefault(c.stream, set()).add(c.rel)
    known: dict[str, set[str]] = {}
    free: dict[str, bool] = {}  # stream -> its inits may go (nothing else of it stays)
    for plan in plans:
        kept = []
        for c in plan:
            if not c.name.endswith(".ts"):
                mapped = known[c.stream] if c.stream in known else known.setdefault(c.stream, inits(c.stream))
                if _is_init(c.rel, mapped):
                    if c.stream not in free:
                        free[c.stream] = all(_is_init(r, mapped) or r in doomed[c.stream] for r in rels(c.stream))
                    if not free[c.stream]:
                        continue
            kept.append(c)
        plan[:] = kept


def _is_init(rel: str, known: set[str]) -> bool:
    return rel in known or looks_like_init(posixpath.basename(rel))


def hold_inits_below(root: Path, index: SegmentIndex, plans: list[list[Candidate]]) -> None:
    """:func:`hold_inits` for plans over ``index``: playlists read below ``root`` (blocking)."""
    dirs: dict[str, set[str]] = {}
    for plan in plans:
        for c in plan:
            if not c.name.endswith(".ts"):
                dirs.setdefault(c.stream, {""}).add(c.dir)
    if not dirs:
        return
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return

    def rels(sid: str) -> list[str]:
        with index.lock:  # names only, no object per segment
            return [f"{d}/{n}" if d else n for d, seg in index.streams.get(sid, {}).items() for _, _, n in seg.iter()]
    try:
        hold_inits(plans, rels=rels, inits=lambda sid: set().union(
            *(mapped_inits(root_fd, sid, d) for d in dirs.get(sid, {""}))))
    finally:
        os.close(root_fd)
