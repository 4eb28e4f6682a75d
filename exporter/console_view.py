"""``/v2/console/streams``: what the console's grid shows of each stream (a pure function).

Built from the same snapshot view as /v2/health, with the same public rules
(exporter/public.py): the last error without the host's paths, no URL, no pid.  A stale
snapshot shows every stream ``unknown`` like the rest of the API does.
"""
from __future__ import annotations

import socket
from typing import Any

from . import public


def _bitrate_kbps(progress: dict[str, Any]) -> float | None:
    """Average kbit/s of the current process (bytes written over media time)."""
    seconds, size = progress.get("out_time_seconds"), progress.get("bytes")
    if not isinstance(seconds, (int, float)) or not isinstance(size, int) or seconds <= 0:
        return None
    return round(size * 8 / seconds / 1000, 1)


def _last_error(s: dict[str, Any], data: Any) -> str | None:
    lines = public.errors((s.get("last_error") or [])[-1:], data)
    if lines:
        return lines[0]
    last_exit = s.get("last_exit")
    if isinstance(last_exit, dict) and last_exit.get("description") and s.get("state") == "error":
        return public.errors([last_exit["description"]], data)[0]
    return None


def _owner(sid: str, fleet: dict[str, Any]) -> dict[str, Any] | None:
    """Fleet mode: the node running ``sid`` when it is not this one, with its console's address."""
    owner = (fleet.get("owners") or {}).get(sid)
    if not fleet or not isinstance(owner, dict) or owner.get("node") == fleet.get("node"):
        return None
    base = ((fleet.get("nodes") or {}).get(owner.get("node")) or {}).get("url")
    return {"node": owner.get("node"), "console_url": f"{base.rstrip('/')}/" if base else None}


def stream_entry(s: dict[str, Any], data: Any, viewers: dict[str, Any], fleet: dict[str, Any],
                 now: float) -> dict[str, Any]:
    """One stream's tile."""
    progress, rec, video = s.get("progress") or {}, s.get("recording") or {}, s.get("video") or {}
    started = s.get("pid_started_at")
    return {"id": s["id"], "name": s.get("name") or s["id"], "state": s.get("state"), "since": s.get("since"),
            "uptime_seconds": round(max(0.0, now - started), 1) if isinstance(started, (int, float)) else None,
            "restarts": s.get("restarts", 0), "fps": progress.get("fps"), "bitrate_kbps": _bitrate_kbps(progress),
            "codec": video.get("codec"), "width": video.get("width"), "height": video.get("height"),
            "last_error": _last_error(s, data),
            "recording": {"bytes": rec.get("total_bytes"), "oldest_at": rec.get("oldest_segment_at"),
                          "newest_at": rec.get("newest_segment_at")},
            "viewers": int(viewers.get(s["id"], 0) or 0), "owner": _owner(s["id"], fleet)}


def console_streams(view: Any, now: float) -> dict[str, Any]:
    """The whole answer of ``GET /v2/console/streams``."""
    data = view.data or {}
    fleet = data.get("fleet") or {}
    viewers = (data.get("consumers") or {}).get("per_stream") or {}
    streams = [stream_entry(s, data, viewers, fleet, now) for s in view.streams]
    known = {s["id"] for s in streams}
    for sid in sorted(set(fleet.get("owners") or {}) - known):  # run by another node only
        owner = _owner(sid, fleet)
        if owner is not None:
            streams.append({"id": sid, "name": sid, "state": "elsewhere", "since": None, "uptime_seconds": None,
                            "restarts": 0, "fps": None, "bitrate_kbps": None, "codec": None, "width": None,
                            "height": None, "last_error": None,
                            "recording": {"bytes": None, "oldest_at": None, "newest_at": None},
                            "viewers": 0, "owner": owner})
    return {"generated_at": now, "node": {"name": fleet.get("node") or socket.gethostname(), "fleet": bool(fleet)},
            "stale": bool(view.stale), "streams": streams}
