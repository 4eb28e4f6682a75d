"""What ``vasctl status`` shows beside the snapshot: each stream process's CPU and RSS, and sizes
in units a person reads.

CPU comes from the kernel's own accounting of the process: every thread's run time in
nanoseconds (``/proc/PID/task/*/schedstat``).  psutil's ``cpu_percent`` counts in clock
ticks (10 ms), so a 0.2 s sample could only say 0, 5, 10 ... %.  ``--watch`` measures
over the refresh interval instead, from the figures of the previous frame.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

#: Seconds the first (or only) frame measures CPU over.
CPU_SAMPLE_SECONDS = 0.2
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")

#: stream id -> (pid, pid start time, CPU seconds, monotonic time): one frame's figures.
Sample = dict[str, tuple[int, float, float, float]]


def human_bytes(n: float) -> str:
    """``512B``, ``488KiB``, ``1.5MiB``, ``12GiB``: three significant figures at most, binary units."""
    for unit in _UNITS:
        if abs(n) < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{int(n)}B"
            return f"{n:.1f}{unit}" if abs(n) < 10 else f"{n:.0f}{unit}"
        n /= 1024
    raise AssertionError("unreachable")


def cpu_seconds(pid: int) -> float | None:
    """CPU time the process has used so far, summed over its threads, in ns precision.

    Falls back to the tick-precision total (``/proc/PID/stat``, via psutil) where
    schedstat is missing; None when the process is gone or not ours to read.
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    try:
        for tid in tasks:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as fh:
                total += int(fh.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass  # a thread ended while we read, or no schedstat: the tick-precision total
    import psutil
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return None


def cpu_percent(before: tuple[int, float, float, float], after: tuple[int, float, float, float]) -> float | None:
    """CPU % between two samples of the same process (pure); None for a different process."""
    if before[:2] != after[:2] or after[3] <= before[3]:
        return None
    return max(0.0, (after[2] - before[2]) / (after[3] - before[3]) * 100)


def sample(streams: Iterable[dict[str, Any]]) -> Sample:
    """This instant's CPU seconds of every stream that has a process."""
    out: Sample = {}
    for s in streams:
        pid = s.get("pid")
        if not pid:
            continue
        used = cpu_seconds(pid)
        if used is not None:
            out[s["id"]] = (pid, s.get("pid_started_at") or 0.0, used, time.monotonic())
    return out


def add_usage(streams: list[dict[str, Any]], previous: Sample | None = None) -> Sample:
    """Fill ``cpu_percent`` and ``rss_bytes`` of each stream; return this frame's CPU figures.

    Without ``previous`` (a one-shot status) CPU is measured over CPU_SAMPLE_SECONDS.
    """
    if previous is None:
        previous = sample(streams)
        if previous:
            time.sleep(CPU_SAMPLE_SECONDS)
    now = sample(streams)
    for s in streams:
        s["cpu_percent"] = s["rss_bytes"] = None
        if s["id"] in now and s["id"] in previous:
            pct = cpu_percent(previous[s["id"]], now[s["id"]])
            s["cpu_percent"] = None if pct is None else round(pct, 1)
        if s["id"] in now:
            s["rss_bytes"] = _rss(now[s["id"]][0])
    return now


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
