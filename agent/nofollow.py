"""Open a file or directory below a root, one component at a time, never through a symlink.

Stdlib only, shared by the agent's retention (agent/recordings/dirfd.py: what it deletes)
and the exporter (exporter/media.py: the recordings it serves): a path component that is
a symlink, ``..``, empty or holds a ``/`` fails with OSError (ELOOP or EINVAL), so a link
planted in a stream's folder can lead neither a deletion nor a download outside the root.
"""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Sequence

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _check(part: str) -> None:
    if part in ("", ".", "..") or "/" in part or "\0" in part:
        raise OSError(errno.EINVAL, f"bad path component {part!r}")


def open_below(root_fd: int, parts: Iterable[str]) -> int:
    """An fd of the directory ``root/parts...``, no component followed if it is a symlink (OSError: ELOOP)."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            _check(part)
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_file_below(root: str | os.PathLike[str], parts: Sequence[str]) -> int:
    """A read-only fd of the regular file ``root/parts...`` (the last part is the file's name).

    The root itself may be reached through symlinks (an operator's choice); nothing below it
    is.  OSError when a component is a symlink, is missing, or the file is not a regular file.
    """
    if not parts:
        raise OSError(errno.EINVAL, "no file name")
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dir_fd = open_below(root_fd, parts[:-1])
    finally:
        os.close(root_fd)
    try:
        _check(parts[-1])
        fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device would block or never end
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    os.set_blocking(fd, True)
    return fd


def read_small(dir_fd: int, name: str, limit: int) -> bytes:
    """The first ``limit`` bytes of the regular file ``name`` in the open directory ``dir_fd``,
    not through a symlink (a FIFO or device is refused: it would block or never end)."""
    _check(name)
    fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit)
    finally:
        os.close(fd)
