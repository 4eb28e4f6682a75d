"""Each stream's last known retention, remembered next to the recordings.

A stream renamed or removed from ``streams.yaml`` leaves its directory behind (an
*orphan*).  Its footage must not go sooner than the retention the stream had, so the
agent keeps ``{root}/.vas/retention.json`` (``{"streams": {id: seconds}}``) current on
start and on every reload.  It lives under the root, not in the runtime directory: it
must survive a reboot and travel with the recordings.  A directory nobody ever
configured (an operator's own folder) gets ``recordings.orphan_retention``.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from agent.config.model import Config
from agent.recordings.index import SegmentIndex

log = logging.getLogger("vas.retention")
STATE_DIR = ".vas"
STATE_FILE = "retention.json"


def orphan_max_age(remembered: float | None, orphan_retention: float) -> float:
    """Seconds an orphan's segments are kept (0: for ever).

    Never less than the stream's own retention; a stream that kept for ever (0) still
    does; a directory never configured gets ``orphan_retention``.
    """
    if remembered == 0 or orphan_retention == 0:
        return 0.0
    return max(remembered or 0.0, orphan_retention)


#: The memory is a few bytes per stream; anything larger is not ours.
READ_LIMIT = 4 << 20
DAMAGED = STATE_FILE + ".damaged"


@dataclass
class Loaded:
    """What :func:`load` found: the remembered retentions, and whether the file was damaged."""

    streams: dict[str, float] = field(default_factory=dict)
    damaged: bool = False
    #: Each stream folder's identity (st_dev, st_ino) when last seen: a folder moved aside
    #: under another name is still that stream's (see :func:`inherit`).
    folders: dict[str, tuple[int, int]] = field(default_factory=dict)


def load(root: Path) -> Loaded:
    """The remembered retentions, read below ``root`` without following a symlink.

    A missing file is an empty memory.  A damaged one (torn, not UTF-8, wrong shape) is
    moved aside to ``retention.json.damaged`` (never overwritten: it may be all that says
    an orphan is to be kept) and reported as ``damaged``: see :func:`keep_unknown`.
    """
    path = root / STATE_DIR / STATE_FILE
    try:
        with _state_dir(root, create=False) as dfd:
            try:
                fd = os.open(STATE_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            except FileNotFoundError:
                return Loaded()
            with os.fdopen(fd, "rb") as f:
                raw = f.read(READ_LIMIT)
            try:
                data = json.loads(raw.decode("utf-8"))
                streams, folders = data["streams"], data.get("folders") or {}
                return Loaded({str(k): float(v) for k, v in streams.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0},
                              folders={str(k): (int(v[0]), int(v[1])) for k, v in folders.items()
                                       if isinstance(v, list) and len(v) == 2
                                       and all(isinstance(n, int) and not isinstance(n, bool) for n in v)})
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
                os.replace(STATE_FILE, DAMAGED, src_dir_fd=dfd, dst_dir_fd=dfd)
                log.error("retention: %s is damaged (%s): kept aside as %s; orphaned directories found now are "
                          "kept for ever (delete them yourself when no longer needed)", path, str(exc)[:120], DAMAGED)
                return Loaded(damaged=True)
    except FileNotFoundError:
        return Loaded()
    except OSError as exc:
        log.error("retention: cannot read %s (%s): orphaned directories get recordings.orphan_retention",
                  path, _why(root, exc))
        return Loaded()


def keep_unknown(loaded: Loaded, known: Mapping[str, float], on_disk: Iterable[str]) -> dict[str, float]:
    """``known``, plus "kept for ever" (0) for every directory on disk it does not name when the
    memory was damaged: its retention is unknown, and a guess could delete an archive."""
    out = dict(known)
    if loaded.damaged:
        for sid in on_disk:
            out.setdefault(sid, 0.0)
    return out


@contextmanager
def _state_dir(root: Path, *, create: bool) -> Iterator[int]:
    """An fd of ``{root}/.vas``, opened without following a symlink (ELOOP/ENOTDIR if it is one)."""
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if create:
            try:
                os.mkdir(STATE_DIR, 0o755, dir_fd=root_fd)
            except FileExistsError:
                pass
        dfd = os.open(STATE_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
    finally:
        os.close(root_fd)
    try:
        yield dfd
    finally:
        os.close(dfd)


def _why(root: Path, exc: OSError) -> str:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return f"{root / STATE_DIR} is a symlink or not a directory; remove it so the agent can make its own"
    return str(exc.strerror or exc)


def merged(known: Mapping[str, float], cfg: Config) -> dict[str, float]:
    """``known`` updated with every configured stream's retention.

    Entries of streams neither configured nor on disk are kept: a folder may be missing
    only for now (its disk not mounted at this start, moved away for a copy), and once
    forgotten its archive would go at ``orphan_retention``.  An entry can only make an
    orphan last longer, and costs a few bytes.
    """
    return {**known, **{sid: s.recording.retention for sid, s in cfg.streams.items()}}


def identities(root: Path, names: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(st_dev, st_ino) of each folder ``root/name`` that is a real directory (blocking)."""
    out: dict[str, tuple[int, int]] = {}
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return out
    try:
        for name in names:
            try:
                st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                out[name] = (st.st_dev, st.st_ino)
    finally:
        os.close(root_fd)
    return out


def identity(folder: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of ``folder`` when it is a real directory (blocking: one lstat, which a
    hung mount never answers; the caller bounds it)."""
    try:
        st = os.lstat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def inherit(known: Mapping[str, float], folders: Mapping[str, tuple[int, int]],
            current: Mapping[str, tuple[int, int]]) -> dict[str, float]:
    """Retentions for folders in ``current`` that ``known`` does not name but that were a
    remembered stream's folder (same device and inode): ``mv lobby lobby-2025`` keeps
    lobby's retention.  A reused inode can only make an orphan last longer (orphans keep
    the larger of this and ``orphan_retention``; 0, for ever, wins)."""
    whose = {ident: sid for sid, ident in folders.items() if sid in known}
    return {sid: known[whose[ident]] for sid, ident in current.items()
            if sid not in known and ident in whose}


def follow(root: Path, known: dict[str, float], folders: dict[str, tuple[int, int]], configured: set[str],
           current: dict[str, tuple[int, int]]) -> tuple[dict[str, float], dict[str, tuple[int, int]], bool]:
    """A stream folder moved aside (``mv lobby lobby-2025``) keeps its stream's retention (same
    device and inode as remembered): ``(known, folders, changed)`` updated from ``current``, the
    folders' :func:`identity` now (no file system access: the stats are the caller's, bounded)."""
    found = inherit(known, folders, {sid: i for sid, i in current.items() if sid not in configured})
    for sid, keep in sorted(found.items()):
        log.warning("recordings: %s is a stream's folder moved aside: its segments are kept %s (reason orphan)",
                    root / sid, "for ever" if keep == 0 else f"at least {keep / 86400:g} days")
    known = {**known, **found}
    new = {**{k: v for k, v in folders.items() if k in known}, **current}
    return known, new, bool(found) or new != folders


def save(root: Path, streams: Mapping[str, float], folders: Mapping[str, tuple[int, int]] | None = None) -> None:
    """Write the memory atomically (temp file, fsync, rename) below ``root``, never through a
    symlink (a planted one at the temporary name is replaced, not followed); errors are logged."""
    tmp = f".{STATE_FILE}.tmp"
    try:
        with _state_dir(root, create=True) as dfd:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except FileNotFoundError:
                pass
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dfd)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                # dumps, not dump: json.dump encodes in Python closures that form a reference cycle
                f.write(json.dumps({"streams": dict(sorted(streams.items())),
                                    "folders": {k: list(v) for k, v in sorted((folders or {}).items())}}))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, STATE_FILE, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError as exc:
        log.error("retention: cannot write %s (%s): orphaned directories may get recordings.orphan_retention "
                  "after a restart", root / STATE_DIR / STATE_FILE, _why(root, exc))


def removed_notes(old: Config, new: Config, index: SegmentIndex, remembered: Mapping[str, float]) -> list[str]:
    """One :func:`orphan_note` per stream of ``old`` gone from ``new`` that has recordings."""
    notes = []
    for sid in old.streams:
        stats = index.stats(sid)
        if sid not in new.streams and stats[0]:
            max_age = orphan_max_age(remembered.get(sid), new.recordings.orphan_retention)
            notes.append(orphan_note(sid, index.root / sid, stats, max_age))
    return notes


def orphan_note(sid: str, where: Path, stats: tuple[int, int, float | None, float | None],
                max_age: float) -> str:
    """What happens to a removed or renamed stream's recordings, for the reload's answer and log."""
    import time

    from agent.recordings.disk import size_text
    count, size, oldest, _ = stats
    head = f"recordings of removed stream {sid} ({count} segments, {size_text(size)}) stay in {where}"
    if max_age <= 0:
        return f"{head} and are kept for ever (retention 0); delete them yourself when you no longer need them"
    due = (oldest if oldest is not None else time.time()) + max_age
    first = "the oldest at once" if due <= time.time() else \
        f"the first from {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(due))}"
    return (f"{head}; each is deleted when it is {max_age / 86400:g} days old (reason orphan), "
            f"{first}; re-add the stream or move the directory to keep them")
