"""Kill stream processes a previous agent left behind.

``PR_SET_PDEATHSIG`` normally takes children down with the agent; this is the
second line of defence (e.g. a child that re-parented itself), so a restarted
agent never runs a second FFmpeg for the same stream.  A PID is only trusted
when its start time matches the one the old snapshot recorded (PID reuse).
"""
from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import psutil

from agent import snapshot

log = logging.getLogger("vas.agent")
START_TIME_TOLERANCE = 1.0  # seconds; /proc start times have tick resolution


def kill_orphans(snapshot_path: Path) -> list[int]:
    """SIGKILL the process groups of streams recorded in an old snapshot that still run."""
    try:
        data, _ = snapshot.read(snapshot_path)
    except snapshot.SnapshotUnavailable:
        return []
    killed = []
    streams = data.get("streams") if isinstance(data, dict) else None
    entries = list(streams) if isinstance(streams, list) else []
    if isinstance(data, dict) and isinstance(data.get("sfu"), dict):
        entries.append({**data["sfu"], "id": "sfu"})  # the SFU server, same rules
    for entry in entries:
        # A damaged snapshot must not stop the agent from starting: skip what is not a PID.
        pid = entry.get("pid") if isinstance(entry, dict) else None
        started = entry.get("pid_started_at") if isinstance(entry, dict) else None
        if type(pid) is not int or pid <= 1 or not isinstance(started, (int, float)) or pid == os.getpid():
            continue
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - started) > START_TIME_TOLERANCE:
                continue  # a different process now has that PID
            os.killpg(pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
        log.warning("killed: leftover process group %d of stream %s from a previous agent",
                    pid, entry.get("id"))
        killed.append(pid)
    return killed
