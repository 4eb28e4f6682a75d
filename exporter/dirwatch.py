"""One inotify watch on one directory, read without a thread (the caller polls ``fileno()``).

The exporter learns of a new agent snapshot from this watch the moment it is renamed
into place, instead of a ``stat`` per request.  Not watchdog's observer: its inotify
reader runs on a thread of its own and hands events over to the event loop, so a
request could be served before an event the kernel had already queued.  Read on the
loop itself (``loop.add_reader``), the event of a rename that finished before a
request was sent is always handled before that request: the kernel queues it within
the rename call, and ready callbacks run before a request handler's first step.
"""
from __future__ import annotations

import ctypes
import functools
import os
import struct
from collections.abc import Iterator
from pathlib import Path

IN_ATTRIB, IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO = 0x4, 0x8, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF = 0x100, 0x200, 0x400, 0x800
IN_UNMOUNT, IN_Q_OVERFLOW, IN_IGNORED, IN_ONLYDIR = 0x2000, 0x4000, 0x8000, 0x01000000
#: The file's content may be new (renamed into place, written in place, created).
CONTENT = IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE
#: The file was touched, removed or renamed away.
OTHER = IN_ATTRIB | IN_DELETE | IN_MOVED_FROM
#: The directory itself is gone, moved or unmounted: the watch no longer sees the path.
LOST = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED
MASK = CONTENT | OTHER | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len: struct inotify_event


def events(buffer: bytes) -> Iterator[tuple[int, bytes]]:
    """``(mask, name)`` of each ``struct inotify_event`` in ``buffer`` (name ``b""`` for the directory)."""
    at = 0
    while at + _HEADER.size <= len(buffer):
        _, mask, _, size = _HEADER.unpack_from(buffer, at)
        at += _HEADER.size
        yield mask, buffer[at:at + size].rstrip(b"\0")
        at += size


def masks_for(buffer: bytes, name: bytes) -> int:
    """The union of the masks ``buffer`` holds for ``name`` and for the directory itself."""
    mask = 0
    for m, n in events(buffer):
        if n == name or not n:
            mask |= m
    return mask


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library's symbols, loaded once (the process has it: ``dlopen(NULL)``)."""
    return ctypes.CDLL(None, use_errno=True)


class DirWatch:
    """An inotify instance (non-blocking, close-on-exec) with one watch on ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the directory watched
        self._fd = -1

    def open(self) -> None:
        """Arm the watch; OSError when inotify is missing or the directory cannot be watched."""
        libc = _libc()
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        try:
            before = os.stat(self.directory)
            if libc.inotify_add_watch(fd, os.fsencode(self.directory), MASK) < 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(self.directory))
        except BaseException:
            os.close(fd)
            raise
        self._fd, self.identity = fd, (before.st_dev, before.st_ino)

    def fileno(self) -> int:
        """The inotify descriptor, to poll for readability."""
        return self._fd

    def read(self) -> bytes:
        """Every event queued now (``b""`` when none)."""
        chunks = []
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def moved(self) -> bool:
        """The path names another directory than the one watched (or none): replaced, renamed over."""
        try:
            st = os.stat(self.directory)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self.identity

    def close(self) -> None:
        """Close the descriptor (safe to call twice)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
