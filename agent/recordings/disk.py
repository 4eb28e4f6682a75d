"""The free-space floor, per filesystem: when it may delete, what it may take, and how it says so.

Pure apart from :func:`measure`.  The rules (docs/configuration.md, "Free-space floor"):

* free space is judged per filesystem (``st_dev``) holding the root or segments, and a
  filesystem below its floor is relieved only by segments that live on it;
* a floor the filesystem can never reach (``min_free`` + ``min_free_hysteresis`` >= its
  size) is not enforced as written: only the emergency floor applies there;
* the floor never takes a segment younger than SAFETY_MARGIN unless the filesystem is
  about to be full (free below :func:`emergency_free`), and then only enough to get back
  to twice that.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.config.model import RecordingsConfig
from agent.diskuse import used_percent
from agent.recordings.delete import Candidate, log_error, open_below, plan_free
from agent.recordings.dirfd import folder_parts, open_folder

#: The floor keeps every segment younger than this (the newest hour of each stream).
SAFETY_MARGIN = 3600.0
#: "About to be full": less than 1 % of the filesystem free, at most this much.
EMERGENCY_CAP = 1 << 30


def emergency_free(total: int) -> int:
    """Free bytes under which a filesystem is about to be full (1 %, at most 1 GiB)."""
    return min(total // 100, EMERGENCY_CAP)


@dataclass(frozen=True)
class Filesystem:
    """One filesystem holding the root or segments, as statvfs saw it."""

    dev: int
    path: str            # a directory on it, for messages
    total: int
    free: int
    floor: int           # free bytes below which retention deletes
    target: int          # free bytes a pass aims for
    unreachable: bool    # min_free + hysteresis >= usable: only the emergency floor applies
    usable: int = -1     # the most it can ever have free for us (root-reserved blocks excluded); -1: total

    @property
    def emergency(self) -> bool:
        """Free space below the emergency threshold: the safety margin no longer holds."""
        return self.free < emergency_free(self.total)

    def legacy_view(self) -> dict:
        """The snapshot's ``recordings.filesystem`` (the root's), in its original shape."""
        used = self.used
        return {"total_bytes": self.total, "used_bytes": used, "free_bytes": self.free,
                "used_percent": used_percent(used, self.free)}

    def view(self) -> dict:
        """The snapshot's entry for this filesystem."""
        return {"device": f"{os.major(self.dev)}:{os.minor(self.dev)}", "path": self.path,
                "total_bytes": self.total, "free_bytes": self.free, "floor_bytes": self.floor,
                "target_bytes": self.target, "floor_unreachable": self.unreachable,
                "used_percent": used_percent(self.used, self.free)}

    @property
    def used(self) -> int:
        """Bytes in use as ``df`` counts them (root-reserved blocks are neither used nor free)."""
        return (self.usable if self.usable >= 0 else self.total) - self.free


def usable_of(st: os.statvfs_result) -> int:
    """Bytes a filesystem can ever have free for the agent: its size less the blocks
    reserved for root (ext4 keeps 5 % by default; ``f_bavail`` never counts them)."""
    return (st.f_blocks - (st.f_bfree - st.f_bavail)) * st.f_frsize


def floor_of(rec: RecordingsConfig, total: int, usable: int = -1) -> tuple[int, int, bool]:
    """``(floor, target, unreachable)`` in bytes for a filesystem of ``total`` bytes of which
    at most ``usable`` can be free (-1: all)."""
    floor = rec.min_free.of(total)
    target = floor + rec.min_free_hysteresis.of(total)
    if total > 0 and target >= (usable if usable >= 0 else total):
        emergency = emergency_free(total)
        return emergency, 2 * emergency, True
    return floor, target, False


def floor_problem(rec: RecordingsConfig, total: int, path: str, usable: int = -1) -> str | None:
    """The operator-facing warning for a floor ``path``'s filesystem can never reach, or None."""
    floor, target, unreachable = floor_of(rec, total, usable)
    if not unreachable:
        return None
    reserved = f", {size_text(total - usable)} of it reserved for root" if 0 <= usable < total else ""
    return (f"recordings.min_free + min_free_hysteresis ({size_text(rec.min_free.of(total))} + "
            f"{size_text(rec.min_free_hysteresis.of(total))}) >= the size of the filesystem of {path} "
            f"({size_text(total)}{reserved}): that floor can never be reached, so it is not enforced; retention "
            f"deletes for free space only when less than {size_text(floor)} is free. Lower min_free")


def plan_relief(fs: Filesystem, streams: Callable[[], Iterable[Iterable[Candidate]]], *, now: float, planned: int,
                keep: Callable[[Candidate], bool], shift: Callable[[float], float],
                mtime_of: Callable[[Candidate], float | None] | None = None) -> list[Candidate]:
    """Oldest segments of ``fs`` until its target is met; ``streams()``: per stream, its segments
    oldest first, read afresh for each walk (a second one in an emergency).

    Lazily: a pass holds only the segments it takes, never an object per indexed segment
    (~550 bytes each: 12 MiB at 23k segments on every pass, part of which RSS keeps).
    ``planned`` bytes on ``fs`` are already being deleted by other policies.  Segments
    younger than SAFETY_MARGIN stay, unless the filesystem is about to be full.  Ages are
    judged on ``mtime_of`` (the file as it is now; None: gone) when given, not the index's
    mtime, which a ``touch`` or ``cp -p`` after the file was indexed leaves stale.
    """
    young = now - SAFETY_MARGIN
    real = mtime_of or (lambda c: c.mtime)

    def old_only(c: Candidate) -> bool:
        if keep(c):
            return True
        mtime = real(c)
        return mtime is None or shift(mtime) >= young

    out = plan_free(streams(), need=fs.target - fs.free - planned, keep=old_only)
    if fs.emergency:  # the margin gives way, but only back to twice the emergency threshold
        need = 2 * emergency_free(fs.total) - fs.free - planned - sum(c.size for c in out)
        taken = {(c.stream, c.rel) for c in out}
        out += plan_free(streams(), need=need, keep=lambda c: keep(c) or (c.stream, c.rel) in taken
                         or real(c) is None)
    return out


class LiveMtimes:
    """A segment's mtime as the file system has it now (lstat through ``O_NOFOLLOW`` directory
    fds below the root); None when it is gone.  ``close()`` when done."""

    def __init__(self, root: Path) -> None:
        self._root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._fds: dict[tuple[str, str], int | None] = {}

    def __call__(self, c: Candidate) -> float | None:
        key = (c.stream, c.dir)
        if key not in self._fds:
            try:
                self._fds[key] = open_folder(self._root_fd, c.stream, c.dir)
            except OSError:
                self._fds[key] = None
        fd = self._fds[key]
        try:
            return None if fd is None else os.stat(c.name, dir_fd=fd, follow_symlinks=False).st_mtime
        except OSError:
            return None

    def close(self) -> None:
        """Close every descriptor (safe twice)."""
        for fd in self._fds.values():
            if fd is not None:
                os.close(fd)
        self._fds.clear()
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1


def size_text(n: int) -> str:
    """``1.5GiB``: sizes in operator messages."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n}B"


def measure_below(root: Path, rec: RecordingsConfig, places: dict[int, tuple[str, str]]) -> list[Filesystem]:
    """:func:`measure` from the root's path; [] (logged) when the root cannot be opened."""
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        log_error(f"cannot read free space of {root}: {exc.strerror}")
        return []
    try:
        return measure(root_fd, rec, str(root), places)
    finally:
        os.close(root_fd)


def measure(root_fd: int, rec: RecordingsConfig, root: str,
            places: dict[int, tuple[str, str]]) -> list[Filesystem]:
    """statvfs of the root's filesystem and of each one in ``places`` (st_dev -> a directory on it).

    Directories are opened below the root without following symlinks; one that moved to
    another filesystem meanwhile is measured where it is now (the next scan re-files it).
    """
    seen: dict[int, Filesystem] = {}
    for parts in [[], *(folder_parts(sid, dir_rel) for sid, dir_rel in places.values())]:
        try:
            fd = open_below(root_fd, parts)
        except OSError:
            continue  # vanished meanwhile: nothing of it to relieve
        try:
            actual, st = os.fstat(fd).st_dev, os.fstatvfs(fd)
        finally:
            os.close(fd)
        if actual in seen:
            continue
        total, free, usable = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize, usable_of(st)
        floor, target, unreachable = floor_of(rec, total, usable)
        seen[actual] = Filesystem(actual, "/".join([root, *parts]), total, free, floor, target, unreachable,
                                  usable)
    return list(seen.values())


def check_floors(rec: RecordingsConfig, root: str, stream_ids: Iterable[str]) -> list[str]:
    """``vas-agent --check``: the floor against the filesystems of the root and of each
    existing stream directory (a separate mount is its own filesystem)."""
    path = root
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)  # not created yet: it will live on its parent's filesystem
    places = [path, *(p for p in (os.path.join(root, s) for s in stream_ids) if os.path.isdir(p))]
    out, seen = [], set()
    for place in places:
        try:
            dev, st = os.stat(place).st_dev, os.statvfs(place)
        except OSError:
            continue
        if dev not in seen:
            seen.add(dev)
            problem = floor_problem(rec, st.f_blocks * st.f_frsize, place, usable_of(st))
            out += [problem] if problem else []
    return out
