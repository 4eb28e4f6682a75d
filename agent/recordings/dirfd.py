"""Directory file descriptors that cannot be led outside the recordings root.

:func:`open_below` opens ``root/a/b`` one component at a time with ``O_NOFOLLOW``,
so a directory swapped for a symlink cannot redirect a deletion; :class:`Placement`
checks, right before each unlink, that a cached fd is still the directory at its
path under the root (an fd follows its directory when it is moved away).
"""
from __future__ import annotations

import os
import stat

from agent.nofollow import open_below

#: Every this many files of a directory, its whole path is checked with no symlink followed.
STRICT_EVERY = 64

__all__ = ["STRICT_EVERY", "Placement", "open_below"]  # open_below lives in agent/nofollow.py (the exporter shares it)


class Placement:
    """Whether a cached directory fd is still the directory at its path under the root.

    An fd follows its directory when it is moved: one moved out of the root mid-pass
    would still be deleted from.  Checked right before every unlink: the fd's real
    ancestor as many levels up as it is deep (``..`` from the fd, never a symlink) must be
    the root; every STRICT_EVERY files of a directory the whole path from the root is
    walked with no symlink followed and must name the fd.
    """

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self._checks: dict[tuple[str, str], int] = {}
        self._ids: dict[int, tuple[int, int]] = {}  # an fd's (device, inode) never changes
        st = os.fstat(root_fd)
        self._root = (st.st_dev, st.st_ino)

    def still_there(self, fd: int, stream: str, dir_rel: str) -> bool:
        """True when ``fd`` is ``root/stream/dir_rel`` now."""
        n = self._checks.get((stream, dir_rel), 0)
        self._checks[(stream, dir_rel)] = n + 1
        parts = [stream, *(dir_rel.split("/") if dir_rel else [])]
        try:
            if n % STRICT_EVERY:
                # Up from the fd itself ("..", never a symlink): its real ancestor that many levels
                # up must be the root.  A path from the root would follow a stream folder moved
                # out and symlinked back (`mv cam1 /other && ln -s /other/cam1 cam1`).
                up = os.stat("/".join([".."] * len(parts)), dir_fd=fd, follow_symlinks=False)
                return (up.st_dev, up.st_ino) == self._root
            there = _strict_stat(self.root_fd, parts)
            st = os.fstat(fd)
            self._ids[fd] = (st.st_dev, st.st_ino)
        except OSError:
            return False
        return stat.S_ISDIR(there.st_mode) and (there.st_dev, there.st_ino) == self._ids.get(fd)


def _strict_stat(root_fd: int, parts: list[str]) -> os.stat_result:
    fd = open_below(root_fd, parts)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)
