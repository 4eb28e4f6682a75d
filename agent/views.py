"""The snapshot's shape: what the agent publishes about itself and each stream.

Every text that may hold a camera URL is redacted before it gets here.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from agent.interface import Observed
from agent.redact import redact
from agent.snapshot import SCHEMA_VERSION
from agent.version import build

if TYPE_CHECKING:
    from agent.supervise.stream import Stream


def stream_view(s: Stream, secrets: frozenset[str], retention: Any = None) -> dict[str, Any]:
    """One stream as the snapshot shows it."""
    p = s.progress
    return {
        "id": s.cfg.id,
        "name": s.cfg.name,
        "enabled": s.cfg.enabled,
        "url": redact(s.cfg.url, secrets) if s.cfg.url else None,
        "mode": "command" if s.cfg.command is not None else "rtsp",
        "state": s.state.value,
        "since": s.since,
        "pid": s.pid,
        "pid_started_at": s.child.wall_started_at if s.child else None,
        "restarts": s.restarts,
        "restart_reasons": dict(s.restart_reasons),
        "last_exit": s.last_exit,
        "last_error": list(s.stderr),
        "next_restart_at": s.next_restart_at,
        "progress": None if p is None else {
            "fps": p.fps, "frames": p.frame, "bytes": p.total_size,
            "out_time_seconds": p.out_time_us / 1e6, "last_progress_at": s.last_progress_at,
        },
        "producer": None if s.producer is None else s.producer.view(),
        "video": s.video,  # codec, width, height: probed once per spawn, None until known
        "recording": {"enabled": s.cfg.recording.enabled,
                      "segment_duration_seconds": s.cfg.recording.segment_duration,
                      "retention_seconds": s.cfg.recording.retention,
                      "max_size_bytes": s.cfg.recording.max_size or None,
                      **(retention.stream_view(s.cfg.id) if retention is not None else {})},
    }


def snapshot_json(a: Observed) -> str:
    """The whole snapshot as JSON; unchanged streams reuse their cached entry.

    Serialising 500 streams on every state change costs ~15 ms of event loop,
    so a restart or reload re-serialises only the streams it touched.
    """
    head = json.dumps(agent_view(a), separators=(",", ":"))
    entries = []
    for s in a.streams.values():
        if s.view_json is None:
            view = stream_view(s, a.cfg.secrets, a.retention)
            s.view_json = json.dumps(view, separators=(",", ":"))
        entries.append(s.view_json)
    return head[:-1] + ',"streams":[' + ",".join(entries) + "]}"


def agent_view(a: Observed) -> dict[str, Any]:
    """The snapshot without its stream list (see :func:`snapshot_json`)."""
    cfg = a.cfg
    view = {
        "version": SCHEMA_VERSION,
        "agent": {"pid": os.getpid(), "started_at": a.started_at, "status": a.status, **build()._asdict(),
                  "runtime_dir": str(a.runtime_dir),
                  "event_loop_lag_seconds": a.publisher.lag.view()},
        "config": {"path": str(cfg.path), "sha256": cfg.sha256,
                   "recordings_root": str(cfg.recordings_root),
                   "last_reload": a.last_reload, "needs_restart": list(a.needs_restart)},
    }
    if a.retention is not None:
        view["recordings"] = a.retention.view()
    if a.fleet is not None:  # absent: single-host mode
        view["fleet"] = a.fleet.view()
    if a.sfu is not None and a.consumers is not None:  # absent: no SFU configured
        view["sfu"] = a.sfu.view()
        view["consumers"] = a.consumers.view()
    return view
