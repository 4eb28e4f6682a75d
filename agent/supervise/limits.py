"""The agent's process limits: its file-descriptor budget and its malloc arenas.

Each running stream holds three descriptors (stdout and stderr pipes, a
pidfd) and briefly a few more while spawning.  systemd's default soft limit
is 1024, which would leave about a third of 500 streams failing with "Too
many open files"; the hard limit (524288 by default) is what the agent may
raise itself to.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource

#: glibc arenas: the default (8 per core) lets the agent's short-lived worker threads
#: spread small allocations over many heaps, and RSS creeps up for hours (measured
#: with a flat Python heap: +1.8 MiB per 800 refused reloads, flat from 500 on with 2).
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt() parameter, from glibc's malloc.h

#: Descriptors per enabled stream, with room for the ones a spawn holds briefly.
FDS_PER_STREAM = 4
#: The agent's own: event loop, control socket and its clients, lock, logs, inotify.
FDS_BASE = 64


def fds_needed(enabled_streams: int) -> int:
    """Descriptors the agent needs to run ``enabled_streams`` streams."""
    return FDS_BASE + FDS_PER_STREAM * enabled_streams


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new ``(soft, hard)``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # e.g. above fs.nr_open: keep what we have, the check below tells
    return soft, hard


def fd_warning(enabled_streams: int, limit: int) -> str | None:
    """A warning when ``enabled_streams`` cannot fit in ``limit`` descriptors."""
    need = fds_needed(enabled_streams)
    if need <= limit:
        return None
    return (f"{enabled_streams} enabled streams need about {need} file descriptors but the limit "
            f"is {limit}: some streams will fail with 'Too many open files'; raise LimitNOFILE= "
            f"in the unit (or ulimit -Hn)")


#: Descriptors a spawn always leaves free: the snapshot, the control socket's clients,
#: retention and the SFU API must keep working when streams alone would fill the table.
FD_RESERVE = 24
#: Children running now (agent/supervise/process.py counts them): the cheap estimate before a precise look.
children = 0


def spawn_refusal() -> str | None:
    """Why a new child must not start now (the descriptor table is nearly full), or None.

    Cheap while far from the limit: ``/proc/self/fd`` is only listed when an estimate
    from the number of running children comes within reach of it.
    """
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or fds_needed(children + 1) + FD_RESERVE < soft:
        return None
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        return None
    if used + FDS_PER_STREAM + FD_RESERVE <= soft:
        return None
    return (f"descriptor limit reached ({used} of {soft} in use, {FD_RESERVE} kept for the agent); "
            "raise LimitNOFILE= in the unit")


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (before any thread exists; ``MALLOC_ARENA_MAX`` wins).

    Returns True when the cap was set; False on another libc or when the
    environment already says.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        return False
    return bool(mallopt and mallopt(_M_ARENA_MAX, arenas) == 1)
