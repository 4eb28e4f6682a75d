"""CPU seconds and RSS of the streams' processes: sampled off the scrape, written as text.

At 500 streams, sampling every process with psutil costs ~20 ms (its objects around two /proc
files per process) and rendering the 1,001 samples with ``generate_latest`` ~6.5 ms: in a scrape
that is on the event loop, and no cache of a few seconds outlives Prometheus' 15 s period.  Here
the two files psutil's ``cpu_times`` and ``memory_info().rss`` read are read directly (~10 ms for
500), the text is written directly, and both happen on a thread every SAMPLE_EVERY while scrapes
come: a scrape takes the last text.  The first scrape after a pause (nothing sampled for
STALE_AFTER) samples first, so no scrape shows figures older than that.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from .streamtext import escape, go, header

log = logging.getLogger("vas.exporter")

#: Seconds between samples while scrapes come: the figures are as old as the snapshot's can be
#: (the agent writes one every 5 s), for the CPU a scrape that sampled spent every 15 s.
SAMPLE_EVERY = 5.0
#: A sample older than this (no scrape for a while, or the sampling task not running) is taken
#: again by the scrape that finds it.
STALE_AFTER = 2 * SAMPLE_EVERY
#: Seconds without a scrape after which the background sampling stops until the next one.
IDLE_AFTER = 60.0
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

CPU = ("vas_ffmpeg_cpu_seconds", "counter", "CPU time of the stream's FFmpeg.")
RSS = ("vas_ffmpeg_resident_memory_bytes", "gauge", "RSS of the stream's FFmpeg.")
HEALTHY = ("vas_ffmpeg_processes_healthy", "gauge", "Stream processes running and sampled.")


def read_stat(pid: object) -> tuple[float, int] | None:
    """``(cpu seconds, rss bytes)`` of ``pid``, or None when it is not a pid, gone or a zombie: utime
    + stime from ``/proc/<pid>/stat``, the resident pages from ``/proc/<pid>/statm`` (stat's own count
    is the kernel's per-CPU estimate: hundreds of KiB off ``ps`` and psutil)."""
    if type(pid) is not int or pid <= 0:
        return None
    try:
        raw, pages = _read(f"/proc/{pid}/stat", 4096), _read(f"/proc/{pid}/statm", 256).split()
    except OSError:  # gone (ENOENT, ESRCH), or not ours to read
        return None
    fields = raw[raw.rfind(b")") + 2:].split()  # the command may hold spaces and ')': after its last ')'
    if fields[:1] in ([b"Z"], [b"X"]):  # exited, not yet reaped: no process runs (its RSS reads 0)
        return None
    try:  # stat's fields 14 and 15 (utime, stime: clock ticks), counted from pid as 1; statm's 2nd
        return (int(fields[11]) + int(fields[12])) / _TICKS, int(pages[1]) * _PAGE
    except (IndexError, ValueError):
        return None


def _read(path: str, size: int) -> bytes:
    """Up to ``size`` bytes of ``path``, with ``os.open``: a buffered file object cost as much as the read."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def sample(streams: list[dict[str, Any]]) -> dict[str, tuple[float, int]]:
    """Each stream's ``(cpu seconds, rss bytes)``, for the streams whose process runs."""
    samples = {}
    for s in streams:
        figures = read_stat(s.get("pid"))
        if figures is not None:
            samples[s["id"]] = figures
    return samples


def render(samples: dict[str, tuple[float, int]]) -> bytes:
    """The three families as ``generate_latest`` writes them (numbers as streamtext's ``go``)."""
    labels = [f'{{stream="{escape(sid)}"}} ' for sid in samples]
    figures = list(samples.values())
    return "".join((header(*CPU), *(f"vas_ffmpeg_cpu_seconds_total{label}{go(cpu)}\n"
                                    for label, (cpu, _) in zip(labels, figures)),
                    header(*RSS), *(f"vas_ffmpeg_resident_memory_bytes{label}{go(rss)}\n"
                                    for label, (_, rss) in zip(labels, figures)),
                    header(*HEALTHY), f"vas_ffmpeg_processes_healthy {go(float(len(samples)))}\n")).encode()


class ProcessSampler:
    """The last sample of the streams' processes, its text, and when it was taken."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        #: The pids the last sample read, with its figures (stream -> (cpu seconds, rss bytes)), in one
        #: attribute: ``take`` runs on a thread.
        self._of: tuple[dict[str, Any], dict[str, tuple[float, int]]] = ({}, {})
        self.text = render({})
        self.taken_at = -STALE_AFTER
        self.wanted_at = -IDLE_AFTER  # the last scrape (or API read) that used a sample

    def current(self, streams: list[dict[str, Any]]) -> None:
        """Before a scrape: sample now (on the caller's thread) unless the last sample is recent."""
        self.wanted_at = self.clock()
        if self.wanted_at - self.taken_at >= STALE_AFTER:
            self.take(streams)

    def take(self, streams: list[dict[str, Any]]) -> None:
        """Sample and render (any thread: the results are replaced in one assignment each)."""
        samples = sample(streams)
        self._of = ({s["id"]: s.get("pid") for s in streams}, samples)
        self.text, self.taken_at = render(samples), self.clock()

    @property
    def samples(self) -> dict[str, tuple[float, int]]:
        """The last sample: stream -> (cpu seconds, rss bytes)."""
        return self._of[1]

    def figures(self, stream: dict[str, Any]) -> tuple[float, int] | None:
        """``(cpu seconds, rss bytes)`` of the stream's process now in the snapshot: the last
        sample's when it read that pid, else read now (a respawned FFmpeg's new pid must not be
        shown with the old process's CPU and RSS until the next sample)."""
        pids, samples = self._of
        pid = stream.get("pid")
        if stream["id"] in pids and pids[stream["id"]] == pid:
            return samples.get(stream["id"])
        return read_stat(pid)

    async def run(self, streams: Callable[[], list[dict[str, Any]]]) -> None:
        """Every SAMPLE_EVERY while scrapes come, sample on a thread, so that no scrape waits for it."""
        failing = False
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            if self.clock() - self.wanted_at < IDLE_AFTER:
                try:
                    await asyncio.to_thread(self.take, streams())
                except Exception:  # said once a streak; scrapes sample for themselves meanwhile
                    if not failing:
                        log.exception("sampling the streams' processes failed; scrapes sample them "
                                      "themselves until it works again")
                    failing = True
                else:
                    failing = False
