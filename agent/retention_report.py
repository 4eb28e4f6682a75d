"""The cleanup route's answer, in the seed's shape (the exporter's cleanup endpoints share it)."""
from __future__ import annotations

import time
from typing import Any

from .retention import Outcome

#: A cleanup result names at most this many files per stream.
FILES_LISTED = 1000


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def cleanup_result(outcomes: dict[str, tuple[float, Outcome]], *, now: float, dry_run: bool,
                   retention_days: float | None) -> dict[str, Any]:
    """The cleanup route's answer: totals plus the seed's shape per stream."""
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
