"""The policies applied to the index: which segments each pass deletes, and why.

Call these with ``index.lock`` held; they read the index and touch no file.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from agent.config.model import Config
from agent.recordings.delete import FUTURE_AHEAD, Candidate, keeper, plan_age, plan_size
from agent.recordings.disk import Filesystem, LiveMtimes, plan_relief
from agent.recordings.index import SegmentIndex
from agent.recordings.memory import orphan_max_age
from agent.recordings.wallclock import same

Shift = Callable[[float], float]


def _keep(index: SegmentIndex, sid: str, now: float, is_running: Callable[[str], bool],
          shift: Shift) -> Callable[[Candidate], bool]:
    # The newest segment of a running stream may be the file FFmpeg is writing.
    return keeper(now=now, newest=index.newest(sid, now + FUTURE_AHEAD) if is_running(sid) else None, shift=shift)


def _oldest_first(index: SegmentIndex, sid: str) -> Iterable[Candidate]:
    return heapq.merge(*index.oldest_first(sid))


def plan_stream(index: SegmentIndex, cfg: Config, now: float, is_running: Callable[[str], bool],
                shift: Shift = same,
                remembered: Mapping[str, float] | None = None) -> list[tuple[str, list[Candidate]]]:
    """Per stream directory: age (or orphan) first, then the size cap on what remains.

    An orphan keeps at least the retention its stream had (``remembered``).
    """
    plans: list[tuple[str, list[Candidate]]] = []
    for sid in list(index.streams):
        scfg = cfg.streams.get(sid)
        keep = _keep(index, sid, now, is_running, shift)
        max_age = scfg.recording.retention if scfg else orphan_max_age(
            (remembered or {}).get(sid), cfg.recordings.orphan_retention)
        aged = (plan_age(_oldest_first(index, sid), cutoff=now - max_age, keep=keep, shift=shift)
                if max_age > 0 else [])
        if aged:
            plans.append(("age" if scfg else "orphan", aged))
        if scfg and scfg.recording.max_size > 0:
            # Future-dated segments stay whatever the cap says: counted, they would make it take
            # as much current footage instead.
            total = (sum(d.total for d in index.streams[sid].values()) - sum(c.size for c in aged)
                     - index.ahead(sid, now + FUTURE_AHEAD)[1])
            gone = {c.rel for c in aged}
            rest = (c for c in _oldest_first(index, sid) if c.rel not in gone)
            capped = plan_size(rest, total=total, max_size=scfg.recording.max_size, keep=keep)
            if capped:
                plans.append(("size", capped))
    return plans


def plan_disk(index: SegmentIndex, fs: Filesystem, now: float, is_running: Callable[[str], bool], *,
              planned: list[Candidate], shift: Shift = same) -> list[Candidate]:
    """The oldest segments on filesystem ``fs`` (of every stream directory) until its target
    is met; ``planned`` are already being deleted by other policies."""
    keeps = {sid: _keep(index, sid, now, is_running, shift) for sid in index.streams}
    exclude = {(c.stream, c.rel) for c in planned}
    on_fs = {(c.stream, c.dir) for c in planned if _dev(index, c) == fs.dev}
    freed = sum(c.size for c in planned if (c.stream, c.dir) in on_fs)
    try:
        live = LiveMtimes(index.root)
    except OSError:
        return []
    try:
        out = plan_relief(fs, lambda: [heapq.merge(*index.oldest_first(sid, fs.dev)) for sid in list(index.streams)],
                          now=now, planned=freed, shift=shift, mtime_of=live,
                          keep=lambda c: (c.stream, c.rel) in exclude or keeps[c.stream](c))
        # Judged on the files' dates now: the executor must not take them for stale plans.
        return [replace(c, mtime=m) if (m := live(c)) is not None else c for c in out]
    finally:
        live.close()


def _dev(index: SegmentIndex, c: Candidate) -> int:
    d = index.streams.get(c.stream, {}).get(c.dir)
    return d.dev if d is not None else -1


def plan_manual(index: SegmentIndex, cfg: Config, ids: list[str], now: float, is_running: Callable[[str], bool],
                retention_days: float | None, shift: Shift = same) -> dict[str, tuple[float, list[Candidate]]]:
    """``vasctl cleanup``: per stream, its max age and the segments older than that.

    Streams gone from ``cfg`` meanwhile (a reload) are skipped, never a KeyError.
    """
    out = {}
    for sid in ids:
        scfg = cfg.streams.get(sid)
        if scfg is None:
            continue
        max_age = scfg.recording.retention if retention_days is None else retention_days * 86400.0
        doomed = (plan_age(_oldest_first(index, sid), cutoff=now - max_age,
                           keep=_keep(index, sid, now, is_running, shift), shift=shift)
                  if max_age > 0 else [])
        out[sid] = (max_age, doomed)
    return out
