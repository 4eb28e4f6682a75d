"""Writes into directories, seen by inotify and read without blocking.

A command that reports no progress shows it by writing into its recording directory.  One
inotify watch on that directory (a file created, closed after writing or moved in; not deleted:
retention removing old footage is no progress; not every write either, which would be an event
per packet: the caller looks at the newest file's mtime between events), all in one inotify instance for
the agent (a user has few: ``fs.inotify.max_user_instances``, 128 by default, and retention's
watch needs one), read every look with a non-blocking read, so a look costs one ``read``
whatever the folder holds.  A
scan of the folder for its newest file cost a ``stat`` per file: 2-3 ms of CPU per look at
1,300 segments and 90-155 ms at a day of 2 s segments (``bench/recording_watch.py``), per
stream every 2 s.
"""
from __future__ import annotations

import ctypes
import os
import struct
import threading
from pathlib import Path

IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x8, 0x80, 0x100
IN_Q_OVERFLOW, IN_IGNORED, IN_ISDIR = 0x4000, 0x8000, 0x40000000
IN_ONLYDIR = 0x01000000
#: What counts as a write into the directory.
WRITES = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
#: What :meth:`DirWrites.take` says after the kernel dropped events: some file was written.
LOST = ""
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str, path: Path | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", str(path) if path else None)
    return result


class DirWrites:
    """Files created, written or moved in directly in the watched directories since the last :meth:`take`.

    :meth:`watch` looks the path up (a hung mount blocks it: call it off the loop);
    :meth:`take`, :meth:`gone` and :meth:`unwatch` never block.  Watching one directory twice
    (a stream's next run while the last one's watch is being let go) gives the same watch,
    kept until both let it go."""

    def __init__(self) -> None:
        self.fd = _check(_libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC), "inotify_init1")
        self._lock = threading.Lock()
        self._users: dict[int, int] = {}  # watch -> how many watch it
        self._wrote: dict[int, str] = {}  # watch -> the last file written there, not taken yet
        self._gone: set[int] = set()  # watches the kernel ended (directory removed, unmounted)

    def watch(self, directory: Path) -> int:
        """Watch ``directory``: its watch descriptor; ``OSError`` when no watch can be had (no such
        directory, the user's inotify watches used up: ``fs.inotify.max_user_watches``)."""
        wd = _check(_libc.inotify_add_watch(self.fd, os.fsencode(directory), WRITES | IN_ONLYDIR),
                    "inotify_add_watch", directory)
        with self._lock:
            self._users[wd] = self._users.get(wd, 0) + 1
            self._gone.discard(wd)
        return wd

    def unwatch(self, wd: int) -> None:
        with self._lock:
            left = self._users.get(wd, 0) - 1
            if left > 0:
                self._users[wd] = left
                return
            self._users.pop(wd, None)
            self._wrote.pop(wd, None)
            self._gone.discard(wd)
        _libc.inotify_rm_watch(self.fd, wd)  # EINVAL when the kernel ended it already: nothing to do

    def take(self, wd: int) -> str | None:
        """The name of the file last created, written or moved into ``wd``'s directory since the
        last call; ``LOST`` when the kernel dropped events meanwhile; None when nothing came."""
        self._read()
        with self._lock:
            return self._wrote.pop(wd, None)

    def gone(self, wd: int) -> bool:
        """True once ``wd``'s watch ended: its directory was removed, or its file system unmounted."""
        with self._lock:
            return wd in self._gone

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            if not data:
                return
            pos = 0
            with self._lock:
                while pos + _EVENT.size <= len(data):
                    wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
                    pos += _EVENT.size + length
                    if mask & IN_Q_OVERFLOW:  # events were lost: any of them may have been a write
                        self._wrote.update((watched, self._wrote.get(watched, LOST)) for watched in self._users)
                    elif mask & IN_IGNORED:
                        if wd in self._users:
                            self._gone.add(wd)
                    elif mask & WRITES and not mask & IN_ISDIR and wd in self._users:
                        self._wrote[wd] = os.fsdecode(data[pos - length:pos].rstrip(b"\0"))


_shared: DirWrites | None = None
_shared_lock = threading.Lock()


def shared() -> DirWrites:
    """The agent's one instance (made on first use; ``OSError`` when none can be had)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = DirWrites()
        return _shared
