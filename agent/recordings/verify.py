"""Before a size or free-space decision: drop index entries whose files no longer exist.

The watcher does not follow deletions or moves out of the root (see ``watch.EVENTS``:
watching IN_DELETE costs retention's own deletions 80 % of their speed), so a file
removed with ``rm`` or moved away stays counted until the hourly sweep.  Age decisions
rest on each file's own mtime and tolerate that (a vanished file is just "gone"); size
and free-space decisions rest on totals and must not, or they delete real footage to
make room that is already free.  So right before one, each directory of the streams
concerned is listed again (one ``getdents``, no stat per file) unless its mtime shows
nothing was added, removed or renamed there since it was last listed.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from agent.recordings.delete import RECENT_GRACE, open_below
from agent.recordings.index import SegmentIndex

#: A directory changed this recently is listed again next time whatever its mtime says
#: (directory timestamps tick with the kernel's coarse clock).
SETTLE = 2.0


class Verifier:
    """Keeps, per directory, the (inode, mtime) it was last listed at."""

    def __init__(self) -> None:
        self._listed: dict[tuple[str, str], tuple[int, int]] = {}

    def verify_below(self, root: Path, index: SegmentIndex, streams: Iterable[str]) -> int:
        """:meth:`verify` from the root's path (0 when it cannot be opened)."""
        try:
            root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return 0
        try:
            return self.verify(root_fd, index, streams)
        finally:
            os.close(root_fd)

    def verify(self, root_fd: int, index: SegmentIndex, streams: Iterable[str]) -> int:
        """Drop vanished segments of ``streams`` from ``index`` (blocking); how many went."""
        dropped = 0
        for sid in streams:
            with index.lock:
                dirs = list(index.streams.get(sid, {}))
            for dir_rel in dirs:
                dropped += self._verify_dir(root_fd, index, sid, dir_rel)
        return dropped

    def _verify_dir(self, root_fd: int, index: SegmentIndex, sid: str, dir_rel: str) -> int:
        key = (sid, dir_rel)
        try:
            fd = open_below(root_fd, [sid, *(dir_rel.split("/") if dir_rel else [])])
        except FileNotFoundError:
            index.discard_tree(sid, dir_rel)  # the whole directory went (rm -r, moved away)
            self._listed.pop(key, None)
            return 1
        except OSError:
            return 0  # replaced by a symlink or unreadable: the executor refuses it anyway
        try:
            st, listed_at = os.fstat(fd), time.time()
            if self._listed.get(key) == (st.st_ino, st.st_mtime_ns):
                return 0
            names = set(os.listdir(fd))
        except OSError:
            return 0
        finally:
            os.close(fd)
        with index.lock:
            d = index.streams.get(sid, {}).get(dir_rel)
            if d is None:
                return 0
            # A file the watcher indexed after the listing is not in it: only older ones count as gone.
            cutoff = listed_at - RECENT_GRACE
            gone = {n for m, _, n in d.iter() if n not in names and m < cutoff}
            if gone:
                d.remove_names(gone)
                index.prune(sid, dir_rel)
        if st.st_mtime < listed_at - SETTLE:
            self._listed[key] = (st.st_ino, st.st_mtime_ns)
        return len(gone)
