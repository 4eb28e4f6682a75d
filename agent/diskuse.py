"""How full a filesystem is: one definition for the snapshot, vasctl, the API and the
docs, the one ``df`` uses, so the figures an operator compares always agree.

``df``: used = blocks - free blocks; available = blocks an unprivileged writer may
still use (``f_bavail``); Use% = used / (used + available), rounded up.  The
blocks ext4 reserves for root (5 % by default) count as neither, so a disk that
``df`` shows at 100 % may still have ``f_bfree`` left: the agent, as user
``vas``, cannot write there either.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DiskUse:
    """One filesystem's figures, in bytes."""

    size: int       #: f_blocks: the whole filesystem (what ``df`` calls its size)
    used: int       #: f_blocks - f_bfree
    available: int  #: f_bavail: free for an unprivileged writer

    @property
    def used_percent(self) -> float:
        """``df``'s Use%, to two decimals, rounded up like ``df`` rounds (so its integer
        is ``ceil`` of this)."""
        return used_percent(self.used, self.available)


def used_percent(used: int, available: int) -> float:
    """``df``'s definition: ``used / (used + available)`` as a percentage, rounded up to
    0.01 (0.0 for an empty or zero-sized filesystem)."""
    total = used + available
    if total <= 0 or used <= 0:
        return 0.0
    return math.ceil(10000 * used / total - 1e-9) / 100  # the epsilon: 25.0 must not become 25.01


def of_statvfs(st: os.statvfs_result) -> DiskUse:
    """The figures of a ``statvfs`` result."""
    return DiskUse(size=st.f_blocks * st.f_frsize, used=(st.f_blocks - st.f_bfree) * st.f_frsize,
                   available=st.f_bavail * st.f_frsize)
