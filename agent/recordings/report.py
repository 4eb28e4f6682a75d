"""What retention tells: the cleanup route's answer, in the VAS-MS-V2 health API's shape (the exporter's cleanup
endpoints share it), and the WARNING about segments dated in the future."""
from __future__ import annotations

import logging
import time
from typing import Any

from agent.recordings.delete import FUTURE_AHEAD, Outcome
from agent.recordings.index import SegmentIndex

log = logging.getLogger("vas.retention")

#: A cleanup result names at most this many files per stream.
FILES_LISTED = 1000


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def cleanup_result(outcomes: dict[str, tuple[float, Outcome]], *, now: float, dry_run: bool,
                   retention_days: float | None) -> dict[str, Any]:
    """The cleanup route's answer: totals plus the VAS-MS-V2 health API's shape per stream."""
    streams: dict[str, dict[str, Any]] = {}
    for sid, (max_age, o) in outcomes.items():
        streams[sid] = {"stream_id": sid, "retention_days": max_age / 86400 if max_age > 0 else None,
                        "deleted_count": len(o.deleted), "deleted_size_mb": round(o.bytes / 2**20, 3),
                        "deleted_bytes": o.bytes, "cutoff_time": _iso(now - max_age) if max_age > 0 else None,
                        "errors": o.errors, "files": [c.rel for c in o.deleted[:FILES_LISTED]]}
    size = sum(r["deleted_bytes"] for r in streams.values())
    return {"dry_run": dry_run, "retention_days": retention_days,
            "deleted_count": sum(r["deleted_count"] for r in streams.values()),
            "deleted_size_mb": round(size / 2**20, 3), "deleted_bytes": size,
            "errors": sum(r["errors"] for r in streams.values()),
            "cutoff_time": _iso(now - retention_days * 86400) if retention_days is not None else None,
            "streams": streams}


def report_ahead(index: SegmentIndex, now: float, told: set[str]) -> None:
    """A WARNING once per stream holding segments dated over FUTURE_AHEAD in the future (``told``:
    the streams already warned about; one whose count drops to 0 is warned about again later)."""
    from agent.recordings.disk import size_text
    for sid in list(index.streams):
        with index.lock:
            count, size, latest = index.ahead(sid, now + FUTURE_AHEAD)
        if not count:
            told.discard(sid)
        elif sid not in told and latest is not None:
            told.add(sid)
            log.warning("retention: %d segments of %s (%s) are dated in the future (up to %s): no policy "
                        "deletes them before then and the size cap does not count them; fix the host's "
                        "clock, then touch or delete them", count, sid, size_text(size),
                        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(latest)))
