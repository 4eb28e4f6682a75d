"""The agent's file-descriptor budget.

Each running stream holds three descriptors (stdout and stderr pipes, a
pidfd) and briefly a few more while spawning.  systemd's default soft limit
is 1024, which would leave about a third of 500 streams failing with "Too
many open files"; the hard limit (524288 by default) is what the agent may
raise itself to.
"""
from __future__ import annotations

import os
import resource

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
#: Children running now (agent/process.py counts them): the cheap estimate before a precise look.
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
