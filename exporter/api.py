"""The VAS-MS-V2 health API under /v2: health of the system, streams, ingestion, producers,
consumers and recordings; heartbeats, cleanup and force-close go to the agent.

Everything read comes from the cached snapshot (and the processes' samples);
nothing here signals a process or deletes a file.  Unknown ids: 404 JSON;
bad parameters: 400 naming the parameter; agent unreachable: 503 JSON.
"""
from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web

from agent.version import build

from . import public
from .control import AgentUnreachable
from .frame import Routes, json_error

#: What the agent's control socket may answer each change with (agent/control.py); the
#: exporter passes these on and answers anything else (a 500, a status added later) with
#: 502, so a client only ever meets the statuses /v2/openapi.json lists.
AGENT_ANSWERS: dict[str, tuple[int, ...]] = {"heartbeat": (200, 404), "close": (204, 404, 502),
                                             "cleanup": (200, 400, 404, 409), "cleanup_all": (200, 400, 409)}


def agent_error(status: int, body: dict[str, Any], allowed: tuple[int, ...]) -> web.Response:
    """The agent's refusal as a JSON error: its status when documented, else 502 saying what it was."""
    message = body.get("error") if isinstance(body.get("error"), str) else None
    extra = {"parameter": body["parameter"]} if isinstance(body.get("parameter"), str) else {}
    if status in allowed and status >= 400:
        return json_error(status, message or f"refused by the agent ({status})", **extra)
    return json_error(502, f"the agent failed the change ({status}): {message or 'no reason given'}",
                      agent_status=status)


def _unavailable(message: str, **extra: Any) -> web.HTTPServiceUnavailable:
    return web.HTTPServiceUnavailable(text=json.dumps({"error": message, **extra}), content_type="application/json",
                                      headers={"Cache-Control": "no-store"})


def _disk(fs: Any) -> dict[str, Any] | None:
    """A filesystem's figures as every part of VAS shows them (agent/diskuse.py: df's)."""
    if fs is None:
        return None
    return {"free_bytes": fs.available, "size_bytes": fs.size, "used_bytes": fs.used, "used_percent": fs.used_percent}


class Api:
    """Route handlers; ``ctx`` gives the snapshot view, settings, metrics, auth and agent control."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def routes(self, r: Routes) -> None:
        r.add_get("/v2/health/system", self.system)
        r.add_get("/v2/health/streams/{stream_id}", self.stream)
        r.add_get("/v2/health/ingestion", self.ingestion)
        r.add_get("/v2/health/producers", self.producers)
        r.add_get("/v2/health/consumers", self.consumers)
        r.add_get("/v2/health/consumers/{consumer_id}", self.consumer)
        r.add_post("/v2/health/consumers/{consumer_id}/heartbeat", self.heartbeat)
        r.add_get("/v2/health/recordings", self.recordings)
        r.add_get("/v2/health/recordings/{stream_id}", self.recording)
        r.add_get("/v2/fleet/targets", self.fleet_targets)
        r.add_post("/v2/health/recordings/cleanup", self.cleanup_all)
        r.add_post("/v2/health/recordings/{stream_id}/cleanup", self.cleanup_stream)
        r.add_delete("/v2/streams/{stream_id}/consumers/{consumer_id}", self.close_consumer)

    # -- reads ------------------------------------------------------------------
    def _known(self) -> Any:
        """The view, or 503 when there is no agent state to answer from (never a 404 for a known id)."""
        view = self.ctx.view()
        if view.data is None:
            raise _unavailable(view.error or "agent state unavailable")
        return view

    def _streams(self) -> dict[str, dict[str, Any]]:
        return {s["id"]: s for s in self._known().streams}

    async def system(self, request: web.Request) -> web.Response:
        import os

        import psutil
        view, settings = self.ctx.view(), self.ctx.settings
        data, ready = view.data or {}, self.ctx.readiness(view)
        up = ready["checks"][0]["ok"] and (data.get("agent") or {}).get("status") not in (None, "stopped")
        by_state: dict[str, int] = {}
        for s in view.streams:
            by_state[s["state"]] = by_state.get(s["state"], 0) + 1
        fs = self.ctx.recordings.filesystem(view)
        return web.json_response({
            "status": "healthy" if not ready["failing"] else ("degraded" if up else "down"),
            "timestamp": time.time(), "failing": ready["failing"],
            "agent": {**public.agent(data.get("agent")), "up": up,
                      "snapshot_age_seconds": None if view.age is None else round(view.age, 3),
                      "stale": view.stale, "state_readable": not view.unreadable,
                      **({"error": view.error} if view.error else {})},
            "streams": {"total": len(view.streams), "enabled": sum(bool(s.get("enabled")) for s in view.streams),
                        "by_state": by_state},
            "sfu": public.sfu(data.get("sfu"), data), "config": public.config(data.get("config")),
            "build": build()._asdict(),
            "host": {"cpu_percent": psutil.cpu_percent(None), "memory_percent": psutil.virtual_memory().percent,
                     "load_average": list(os.getloadavg())},
            "recordings": {"filesystem": _disk(fs), "problem": (data.get("recordings") or {}).get("problem")},
            "readiness": {"min_live_ratio": settings.min_live_ratio, "require_sfu": settings.require_sfu}})

    async def stream(self, request: web.Request) -> web.Response:
        sid, view = request.match_info["stream_id"], self._known()
        stream = {s["id"]: s for s in view.streams}.get(sid)
        if stream is None:
            owner = self._owner_elsewhere(sid)
            if owner is not None:  # fleet mode: another node runs it; say which, and send the client there
                headers = {"Location": owner["url"]} if owner.get("url") else None
                return web.json_response({"id": sid, "state": "elsewhere", "up": None, "owner": owner},
                                         status=307 if headers else 200, headers=headers)
            return json_error(404, f"unknown stream '{sid}'")
        return web.json_response({**stream, **public.credentials_hidden(stream),
                                  "last_error": public.errors(stream.get("last_error") or [], view.data),
                                  "up": stream.get("state") == "live", "stale": view.stale,
                                  "snapshot_age_seconds": None if view.age is None else round(view.age, 3)})

    def _owner_elsewhere(self, sid: str) -> dict[str, Any] | None:
        """The node that owns ``sid`` per this node's view of etcd, when it is not this one."""
        fleet = (self._known().data or {}).get("fleet") or {}
        owner = (fleet.get("owners") or {}).get(sid)
        if not owner or owner.get("node") == fleet.get("node"):
            return None
        base = ((fleet.get("nodes") or {}).get(owner["node"]) or {}).get("url")
        return {"node": owner["node"], "epoch": owner.get("epoch"),
                "url": f"{base.rstrip('/')}/v2/health/streams/{sid}" if base else None}

    async def fleet_targets(self, request: web.Request) -> web.Response:
        """Prometheus http_sd: every live node's exporter (this node's view of etcd)."""
        from urllib.parse import urlsplit
        fleet = (self.ctx.view().data or {}).get("fleet") or {}
        groups = []
        for name, node in sorted((fleet.get("nodes") or {}).items()):
            url = urlsplit(node.get("url") or "")
            if url.hostname:
                port = url.port or (443 if url.scheme == "https" else 80)
                host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
                groups.append({"targets": [f"{host}:{port}"],
                               "labels": {"vas_node": name, "__scheme__": url.scheme or "http",
                                          "__metrics_path__": "/v2/metrics"}})
        return web.json_response(groups, headers={"Cache-Control": "no-store"})

    async def ingestion(self, request: web.Request) -> web.Response:
        view = self._known()
        sampler = self.ctx.metrics.sampler
        sampler.current(view.streams)
        now, out = time.time(), []
        for s in view.streams:
            cpu, rss = sampler.figures(s) or (None, None)
            out.append({"stream_id": s["id"], "state": s.get("state"), "pid": s.get("pid"),
                        "cpu_seconds": cpu, "rss_bytes": rss,
                        "uptime_seconds": round(now - s["pid_started_at"], 3) if s.get("pid_started_at") else None,
                        "restarts": s.get("restarts", 0), "fps": (s.get("progress") or {}).get("fps"),
                        "last_error": public.errors((s.get("last_error") or [])[-5:], view.data)})
        return web.json_response({"processes": out, "count": len(out), "stale": view.stale})

    async def producers(self, request: web.Request) -> web.Response:
        view = self._known()
        items = [{"stream_id": s["id"], **s["producer"]} for s in view.streams if s.get("producer")]
        return web.json_response({"producers": items, "count": len(items), "stale": view.stale})

    def _consumers(self) -> dict[str, Any]:
        return (self._known().data or {}).get("consumers") or {}

    async def consumers(self, request: web.Request) -> web.Response:
        c = self._consumers()
        active = [public.consumer(a) for a in c.get("active") or []]
        return web.json_response({"consumers": active, "count": len(active), "per_stream": c.get("per_stream", {}),
                                  "ended": c.get("ended", {})})

    async def consumer(self, request: web.Request) -> web.Response:
        cid = request.match_info["consumer_id"]
        match = next((c for c in self._consumers().get("active") or [] if c["consumer_id"] == cid), None)
        return web.json_response(public.consumer(match)) if match else json_error(404, f"unknown consumer '{cid}'")

    async def recordings(self, request: web.Request) -> web.Response:
        view = self._known()
        return web.json_response({"filesystem": _disk(self.ctx.recordings.filesystem(view)), "stale": view.stale,
                                  "streams": [self._recording(s) for s in view.streams]})

    async def recording(self, request: web.Request) -> web.Response:
        sid = request.match_info["stream_id"]
        stream = self._streams().get(sid)
        if stream is None:
            return json_error(404, f"unknown stream '{sid}'")
        return web.json_response(self._recording(stream))

    def _recording(self, s: dict[str, Any]) -> dict[str, Any]:
        count, total, oldest, _ = self.ctx.recordings.per_stream([s]).get(s["id"], (None, None, None, None))
        rec = s.get("recording") or {}
        retention = rec.get("retention_seconds")
        return {"stream_id": s["id"], "enabled": rec.get("enabled"), "segment_count": count, "total_bytes": total,
                "total_size_mb": None if total is None else round(total / 2**20, 3), "oldest_segment_at": oldest,
                "retention_days": retention / 86400 if retention else None, "stale": bool(s.get("stale")),
                "unsafe": rec.get("unsafe")}  # e.g. "symlink, retention not applied"

    # -- changes (token required; the agent does the work) -------------------------
    async def heartbeat(self, request: web.Request) -> web.Response:
        self.ctx.auth.check(request, "heartbeat")
        cid = request.match_info["consumer_id"]
        return await self._forward("heartbeat", "POST", f"/consumers/{quote(cid, safe='')}/heartbeat")

    async def close_consumer(self, request: web.Request) -> web.Response:
        self.ctx.auth.check(request, "admin")
        sid, cid = request.match_info["stream_id"], request.match_info["consumer_id"]
        return await self._forward("close", "DELETE",
                                   f"/streams/{quote(sid, safe='')}/consumers/{quote(cid, safe='')}")

    async def cleanup_all(self, request: web.Request) -> web.Response:
        self.ctx.auth.check(request, "admin")
        return await self._cleanup(request, None)

    async def cleanup_stream(self, request: web.Request) -> web.Response:
        self.ctx.auth.check(request, "admin")
        sid = request.match_info["stream_id"]
        if sid not in self._streams():
            return json_error(404, f"unknown stream '{sid}'")
        return await self._cleanup(request, sid)

    async def _cleanup(self, request: web.Request, sid: str | None) -> web.Response:
        """Forward a cleanup to the agent; a parameter it would not understand is a 400 here
        (the agent checks again: it deletes, so it trusts no caller)."""
        from agent.config import cleanup as cleanup_params
        try:
            params = cleanup_params.parse(request.query, allowed=("retention_days", "dry_run"))
        except cleanup_params.BadParameter as exc:
            return json_error(400, str(exc), parameter=exc.parameter)
        days = params.retention_days
        query = "&".join(q for q in (f"stream={quote(sid)}" if sid else "", "dry_run=1" if params.dry_run else "",
                                     f"retention_days={days!r}" if days is not None else "") if q)
        status, body = await self._call("POST", "/recordings/cleanup" + (f"?{query}" if query else ""))
        streams = body.get("streams")
        if not isinstance(streams, dict) or (sid is not None and not isinstance(streams.get(sid), dict)):
            streams = {}
            if status == 200:
                status, body = 502, {"error": "the agent's cleanup answer has no result for the stream(s) asked"}
        if status != 200:
            return agent_error(status, body, AGENT_ANSWERS["cleanup" if sid else "cleanup_all"])
        if sid:
            return web.json_response({"dry_run": body.get("dry_run"), **streams[sid]})
        return web.json_response({k: body.get(k) for k in ("dry_run", "retention_days", "deleted_count",
                                                          "deleted_size_mb", "cutoff_time")}
                                 | {"streams": list(streams.values())})

    async def _forward(self, kind: str, method: str, path: str) -> web.Response:
        status, body = await self._call(method, path)
        if status == 204 and 204 in AGENT_ANSWERS[kind]:
            return web.Response(status=204)
        if status == 200 and 200 in AGENT_ANSWERS[kind]:
            return web.json_response(body)
        return agent_error(status, body, AGENT_ANSWERS[kind])

    async def _call(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        """Forward to the agent; 503 (not applied) when it is down, hung or too late."""
        view, stale_after = self.ctx.view(), self.ctx.settings.stale_after
        if not view.fresh(stale_after) or view.data is None:
            age = "unknown" if view.age is None else f"{view.age:.0f}s old"
            raise _unavailable(f"the agent is not running or not responding (its state is {age}): "
                               "nothing was sent, nothing applied", applied=False)
        try:
            return await self.ctx.control.call(method, path, alive=lambda: self.ctx.view().fresh(stale_after))
        except AgentUnreachable as exc:
            raise _unavailable(str(exc), applied=False) from None
