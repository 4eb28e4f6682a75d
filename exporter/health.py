"""Load-balancer health: /livez, /readyz, /healthz (GET, HEAD, OPTIONS).

Readiness is a pure function of the snapshot and the settings; its JSON is
rendered once per (snapshot version, freshness) and served from that cache,
so a load balancer's check costs a join (the snapshot's age comes from the mtime the
inotify watch last saw, no ``stat``; exporter/source.py): the body is kept as
the bytes before and after the snapshot's age, which is written in at the
moment of each answer.
"""
from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from agent.config.exporter import Settings

from . import public
from .frame import Routes
from .source import SnapshotSource, View

NO_STORE = {"Cache-Control": "no-store"}
#: Built once: the answers' headers are the same for every check.
JSON_NO_STORE = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json", **NO_STORE}))
_AGE = "\x00age\x00"  # a placeholder no snapshot can produce: json.dumps writes it "\u0000age\u0000"
_AGE_JSON = json.dumps(_AGE).encode()


def readiness(view: View, settings: Settings) -> dict[str, Any]:
    """Every check with its value; ``ready`` only when all pass.

    From a stale snapshot nothing is known of the streams or the SFU now: those
    checks fail with the value ``unknown`` rather than repeat the agent's last word.
    """
    data = view.data or {}
    status = (data.get("agent") or {}).get("status")
    enabled = [s for s in view.streams if s.get("enabled")]
    live = sum(s.get("state") == "live" for s in enabled)
    ratio = live / len(enabled) if enabled else None
    sfu = data.get("sfu")
    checks: list[dict[str, Any]] = [
        {"check": "snapshot_fresh", "ok": view.fresh(settings.stale_after),
         "value": None if view.age is None else round(view.age, 3), "want": f"<= {settings.stale_after:g}s",
         **({"error": view.error} if view.error else {})},
        {"check": "snapshot_readable", "ok": not view.unreadable, "value": "unreadable" if view.unreadable else "ok",
         "want": "ok"},
        {"check": "agent_running", "ok": status == "running", "value": status, "want": "running"},
        {"check": "sfu_up", "ok": not (settings.require_sfu and sfu) or sfu.get("state") == "up",
         "value": sfu.get("state") if sfu else "not configured",
         "want": "up" if settings.require_sfu else "not required"},
        {"check": "live_ratio", "ok": not view.stale and (ratio is None or ratio >= settings.min_live_ratio),
         "value": "unknown" if view.stale else None if ratio is None else round(ratio, 4),
         "want": f">= {settings.min_live_ratio:g}", "live": None if view.stale else live, "enabled": len(enabled)},
    ]
    fleet = data.get("fleet")
    if fleet is not None:  # fleet mode: a node cut off from etcd keeps recording but takes no traffic
        checks.append({"check": "etcd_up", "ok": bool(fleet.get("etcd_up")), "value": bool(fleet.get("etcd_up")),
                       "want": True, **({"error": public.fleet_error(fleet["last_error"])}
                                        if fleet.get("last_error") else {})})
    failing = [c["check"] for c in checks if not c["ok"]]
    return {"status": "ready" if not failing else "not ready", "failing": failing, "checks": checks}


def split_at_age(result: dict[str, Any]) -> tuple[bytes, bytes]:
    """The JSON of ``result`` as the bytes before and after its first check's value (the age)."""
    fresh = {**result["checks"][0], "value": _AGE}
    text = json.dumps({**result, "checks": [fresh, *result["checks"][1:]]}, separators=(",", ":")).encode()
    head, _, tail = text.partition(_AGE_JSON)
    return head, tail


def age_json(age: float | None) -> bytes:
    """``json.dumps(round(age, 3))`` (``null`` without an age), without the encoder's set-up."""
    if age is None:
        return b"null"
    if 0.0 <= age < 1e9:  # every real age: one correctly rounded formatting, not round() then repr()
        text = (b"%.3f" % age).rstrip(b"0")  # the digits repr(round(age, 3)) writes: "1.500" -> "1.5"
        return text + b"0" if text.endswith(b".") else text  # "2.000" -> "2.0", as repr(2.0)
    value = round(age, 3)
    return repr(value).encode() if math.isfinite(value) else json.dumps(value).encode()


class Health:
    """The three health routes over one snapshot source."""

    def __init__(self, settings: Settings, read: Any, source: SnapshotSource | None = None) -> None:
        """``read``: the snapshot's View now; ``source``, when given, tells its age and version
        without a View (a check needs the View only when the verdict may have changed)."""
        self.settings, self._read, self._source = settings, read, source
        #: (snapshot version, fresh) -> the body around the age and the status.
        self._cache: tuple[tuple[int, bool], bytes, bytes, int] | None = None

    def routes(self, r: Routes) -> None:
        for path in ("/livez", "/readyz", "/healthz"):
            handler = self.livez if path == "/livez" else self.readyz
            r.add_get(path, handler)  # HEAD too
            r.add_options(path, handler)  # HAProxy's default check

    async def livez(self, request: web.Request) -> web.Response:
        body = b"" if request.method == "HEAD" else b'{"status":"ok"}'
        return web.Response(body=body, status=200, headers=JSON_NO_STORE)

    async def readyz(self, request: web.Request) -> web.Response:
        source = self._source  # the age and version without a View (_now, inlined: every check pays it)
        age, version = (source.age(), source.version) if source is not None else self._now()
        key = (version, age is not None and age <= self.settings.stale_after)  # as View.fresh
        if self._cache is None or self._cache[0] != key:
            view = self._read()
            age, key = view.age, (view.version, view.fresh(self.settings.stale_after))
            result = readiness(view, self.settings)
            self._cache = (key, *split_at_age(result), 200 if not result["failing"] else 503)
        _, head, tail, status = self._cache
        # The verdict is cached per snapshot; the snapshot's age moves between snapshots,
        # so it is written fresh into every answer (as vas_agent_snapshot_age_seconds is).
        body = b"" if request.method == "HEAD" else head + age_json(age) + tail
        return web.Response(body=body, status=status, headers=JSON_NO_STORE)

    def _now(self) -> tuple[float | None, int]:
        """The snapshot's age and version now."""
        if self._source is None:
            view = self._read()
            return view.age, view.version
        return self._source.age(), self._source.version
