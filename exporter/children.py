"""Ending the console's FFmpeg children: kill, read their pipes to the end, reap.

asyncio (3.11) wakes ``Process.wait()`` only once every pipe of the child is closed, and a pipe
whose reader stopped (a clip whose client stopped reading: its stdout is paused with output
unread) never sees its end.  A plain ``kill(); await wait()`` then waits forever, holding the
clip's slot and its descriptors although FFmpeg is gone.
"""
from __future__ import annotations

import asyncio
import contextlib

#: Bytes read at a time while draining a dead child's pipes (they hold at most a pipe's worth).
DRAIN_CHUNK = 1 << 16


async def reap(proc: asyncio.subprocess.Process) -> int:
    """Kill ``proc`` if it still runs, drain its output pipes and wait for it; its exit status."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            while await pipe.read(DRAIN_CHUNK):
                pass
    return await proc.wait()
