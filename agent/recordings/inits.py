"""fMP4 init segments: files other segments depend on go only with the last of them.

``-hls_segment_type fmp4`` writes one init file (``-hls_fmp4_init_filename``, default
``init.mp4``) that every ``.m4s`` needs to be played; it is written first, so it is
the oldest file and every policy would take it first.  An *init* is a file named by a
playlist's ``EXT-X-MAP:URI`` (playlists in the candidate's directory and the stream's
own), or an ``.mp4`` with ``init`` in its name.  It stays while any other segment of
its stream stays: an init is a few kilobytes, an unplayable archive is a loss.
Templated streams write MPEG-TS (``.ts``), which has no init: their plans are not
looked at.
"""
from __future__ import annotations

import os
import posixpath
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from agent.nofollow import read_small
from agent.recordings.delete import Candidate, open_below
from agent.recordings.index import SegmentIndex

_MAP = re.compile(rb'#EXT-X-MAP:[^\n]*?URI="([^"]+)"')
#: Playlists are read up to this size (a live playlist is a few kilobytes).
PLAYLIST_LIMIT = 4 << 20
#: A folder's playlist names are listed again after this long (listing a live folder of
#: 20,000 segments takes milliseconds; an fMP4 stream's held init wakes every age pass).
PLAYLISTS_TTL = 60.0


def looks_like_init(name: str) -> bool:
    """FFmpeg's default naming and the usual variants (``init.mp4``, ``cam1_init_0.mp4``)."""
    return name.endswith(".mp4") and "init" in name.lower()


class Playlists:
    """Which ``.m3u8`` files each folder holds, listed at most every PLAYLISTS_TTL.

    The playlists themselves are read on every call (they change with every segment);
    a folder found without one is listed again next time (FFmpeg writes its playlist
    only after the first segment).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._names: dict[tuple[str, str], tuple[float, list[str]]] = {}
        self._clock = clock

    def names(self, fd: int, key: tuple[str, str]) -> list[str]:
        """The playlist names in the open folder ``fd`` (``key``: stream and folder)."""
        now = self._clock()
        cached = self._names.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        with os.scandir(fd) as entries:
            found = [e.name for e in entries if e.name.endswith(".m3u8")]
        if found:
            self._names[key] = (now + PLAYLISTS_TTL, found)
        return found

    def mapped(self, root_fd: int, sid: str, dir_rel: str) -> set[str]:
        """Paths (relative to the stream's folder) named by EXT-X-MAP in ``dir_rel``'s playlists."""
        out: set[str] = set()
        try:
            fd = open_below(root_fd, [sid, *(dir_rel.split("/") if dir_rel else [])])
        except OSError:
            return out
        try:
            for name in self.names(fd, (sid, dir_rel)):
                for uri in _map_uris(fd, name):
                    rel = _relative(dir_rel, uri)
                    if rel is not None:
                        out.add(rel)
        except OSError:
            pass  # unreadable: the name rule still applies
        finally:
            os.close(fd)
        return out


def _map_uris(fd: int, name: str) -> list[str]:
    try:
        text = read_small(fd, name, PLAYLIST_LIMIT)  # a FIFO named *.m3u8 would hold the pass for ever
    except OSError:
        return []
    return [uri.decode("utf-8", "surrogateescape") for uri in _MAP.findall(text)]


def _relative(dir_rel: str, uri: str) -> str | None:
    if "://" in uri or uri.startswith("/"):
        return None
    rel = posixpath.normpath(posixpath.join(dir_rel, uri.split("?")[0]))
    return None if rel.startswith("..") else rel


def hold_inits(plans: Iterable[list[Candidate]], *, inits: Callable[[str], set[str]],
               survivor: Callable[[str, Callable[[str], bool]], bool]) -> None:
    """Remove init files from ``plans`` (in place) unless every other segment of their stream goes too.

    ``inits(sid)``: the stream's init paths from playlists (asked only for streams with a
    non-``.ts`` candidate: MPEG-TS segments need no init); ``survivor(sid, goes)``: whether
    some indexed segment of the stream for which ``goes(rel)`` is false remains.
    """
    plans = list(plans)
    doomed: dict[str, set[str]] = {}
    for plan in plans:
        for c in plan:
            doomed.setdefault(c.stream, set()).add(c.rel)
    known: dict[str, set[str]] = {}
    held: dict[str, bool] = {}  # stream -> its inits stay (something else of it stays)
    for plan in plans:
        kept = []
        for c in plan:
            if not c.name.endswith(".ts"):
                mapped = known[c.stream] if c.stream in known else known.setdefault(c.stream, inits(c.stream))
                if _is_init(c.rel, mapped):
                    if c.stream not in held:
                        held[c.stream] = survivor(c.stream, _goes(mapped, doomed[c.stream]))
                    if held[c.stream]:
                        continue
            kept.append(c)
        plan[:] = kept


def _goes(inits: set[str], doomed: set[str]) -> Callable[[str], bool]:
    """Whether a segment of the stream goes with this pass (init files count as going)."""
    return lambda rel: _is_init(rel, inits) or rel in doomed


def _is_init(rel: str, known: set[str]) -> bool:
    return rel in known or looks_like_init(posixpath.basename(rel))


def hold_inits_below(root: Path, index: SegmentIndex, plans: list[list[Candidate]],
                     playlists: Playlists) -> None:
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

    def survivor(sid: str, goes: Callable[[str], bool]) -> bool:
        with index.lock:  # newest first: the newest segment usually stays, so this is quick
            for dir_rel, d in index.streams.get(sid, {}).items():
                names = (d.name(i) for i in range(len(d) - 1, -1, -1))
                if any(not goes(f"{dir_rel}/{n}" if dir_rel else n) for n in names):
                    return True
        return False
    try:
        hold_inits(plans, survivor=survivor, inits=lambda sid: set().union(
            *(playlists.mapped(root_fd, sid, d) for d in dirs.get(sid, {""}))))
    finally:
        os.close(root_fd)
