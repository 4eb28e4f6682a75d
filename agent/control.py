"""The control socket: HTTP over ``{runtime_dir}/agent.sock`` (mode 0660).

The only way for vasctl and the exporter to change anything.  Errors are JSON
``{"error": "..."}`` with a fitting status: 404 unknown stream, 409 busy or
disabled, 422 invalid config.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.client import LINES, START_BY, in_lines, too_late
from agent.config.model import ConfigError
from agent.httplog import quiet_protocol_errors
from agent.interface import Controlled, ReloadFailed, ReloadInProgress

AGENT_KEY = web.AppKey("agent", object)
log = logging.getLogger("vas.control")
def create_app(agent: Controlled) -> web.Application:
    """The control API as an aiohttp application."""
    app = web.Application(middlewares=[_deadline, _json_errors])
    app[AGENT_KEY] = agent
    app.router.add_get("/status", _status)
    app.router.add_post("/reload", _reload)
    app.router.add_post("/streams/{id}/restart", _restart)
    app.router.add_post("/recordings/cleanup", _cleanup)
    app.router.add_post("/consumers/{id}/heartbeat", _heartbeat)
    app.router.add_delete("/streams/{sid}/consumers/{cid}", _close_consumer)
    app.router.add_get("/index/{id}/segments", _index_segments)
    app.router.add_get("/index/{id}/newest", _index_newest)
    app.router.add_get("/index/{id}/known", _index_known)
    return app


@web.middleware
async def _deadline(request: web.Request, handler) -> web.StreamResponse:
    """Drop a request read after the caller's deadline (``X-Vas-Start-By``): not applied."""
    if too_late(request.headers.get(START_BY), time.monotonic()):
        log.warning("control: %s %s dropped: read after its caller's deadline (the agent was stopped or "
                    "busy); not applied", request.method, request.path)
        return _error(503, "the agent read this request after its deadline; not applied", applied=False)
    return await handler(request)


@web.middleware
async def _json_errors(request: web.Request, handler) -> web.StreamResponse:
    """Every failure answers JSON with a reason, never aiohttp's bare text 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json":
            raise
        return _error(exc.status, exc.reason)
    except Exception as exc:
        from agent.redact import redact
        log.exception("control: %s %s failed", request.method, request.path)
        return _error(500, f"internal error: {redact(repr(exc), _agent(request).cfg.secrets)}")


def _agent(request: web.Request) -> Controlled:
    return request.app[AGENT_KEY]  # type: ignore[return-value]


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def _status(request: web.Request) -> web.Response:
    return web.Response(text=_agent(request).view_json(), content_type="application/json")


async def _reload(request: web.Request) -> web.Response:
    try:
        plan = await _agent(request).reload()
    except ReloadInProgress as exc:
        return _error(409, f"{exc}; try again when it is done")
    except ConfigError as exc:
        return _error(422, "invalid config, nothing changed", details=exc.errors)
    except ReloadFailed as exc:
        return _error(500, f"reload failed: {exc}", details=[str(exc)])
    return web.json_response({
        "ok": True, "summary": plan.summary(), "started": plan.start, "restarted": plan.restart,
        "stopped": plan.stop + plan.remove, "updated": plan.update,
        "unchanged": len(plan.unchanged), "needs_restart": plan.needs_restart,
        "warnings": (_agent(request).last_reload or {}).get("warnings", [])})


async def _restart(request: web.Request) -> web.Response:
    agent, sid = _agent(request), request.match_info["id"]
    stream = agent.streams.get(sid)
    if stream is None:
        return _error(404, f"unknown stream '{sid}'")
    if not stream.cfg.enabled:
        return _error(409, f"stream '{sid}' is disabled; enable it in the config and reload")
    await agent.restart_stream(sid)
    return web.json_response({"ok": True, "restarted": sid, "pid": stream.pid})


async def _cleanup(request: web.Request) -> web.Response:
    """Apply retention now (``?stream=ID``, ``?dry_run=1``, ``?retention_days=N`` overrides).

    Any other parameter, a repeated one or ``retention_days`` under one hour: 400, nothing deleted.
    """
    from agent.config import cleanup as cleanup_params
    from agent.recordings.delete import UnsafeDirectory
    agent = _agent(request)
    try:
        params = cleanup_params.parse(request.query, allowed=("stream", "dry_run", "retention_days"))
    except cleanup_params.BadParameter as exc:
        return _error(400, str(exc), parameter=exc.parameter)
    sid = params.stream
    if sid is not None and sid not in agent.cfg.streams:
        return _error(404, f"unknown stream '{sid}'")
    try:
        result = await agent.cleanup(sid, dry_run=params.dry_run, retention_days=params.retention_days)
    except UnsafeDirectory as exc:
        return _error(409, str(exc))
    return web.json_response({"ok": True, **result})


async def _heartbeat(request: web.Request) -> web.Response:
    cid = request.match_info["id"]
    if not await _agent(request).consumer_heartbeat(cid):
        return _error(404, f"unknown consumer '{cid}'")
    return web.json_response({"ok": True, "consumer_id": cid})


async def _close_consumer(request: web.Request) -> web.Response:
    """Force-close a viewer (reason ``admin``): 204, 404 unknown stream or consumer, 502 SFU error."""
    agent, sid, cid = _agent(request), request.match_info["sid"], request.match_info["cid"]
    if sid not in agent.streams:
        return _error(404, f"unknown stream '{sid}'")
    try:
        closed = await agent.close_consumer(sid, cid)
    except Exception as exc:  # the SFU refused or failed: say so, it is not our 500
        return _error(502, f"the SFU could not close consumer '{cid}': {exc}")
    if not closed:
        return _error(404, f"unknown consumer '{cid}' of stream '{sid}'")
    return web.Response(status=204)


def _indexed(request: web.Request) -> tuple[Controlled, Any, str, float] | web.Response:
    """The agent, its retention index, a configured stream's id and its segment duration; or the
    error to answer."""
    agent, sid = _agent(request), request.match_info["id"]
    stream = agent.cfg.streams.get(sid)
    if stream is None:
        return _error(404, f"unknown stream '{sid}'")
    if agent.retention is None:
        return _error(404, "no recordings index (retention is not running)")
    return agent, agent.retention.index, sid, stream.recording.segment_duration


def _seconds(request: web.Request, name: str) -> float:
    import math
    try:
        value = float(request.query[name])
    except (KeyError, ValueError):
        raise web.HTTPBadRequest(text=f'{{"error": "{name}: unix seconds expected", "parameter": "{name}"}}',
                                 content_type="application/json") from None
    if not math.isfinite(value):
        raise web.HTTPBadRequest(text=f'{{"error": "{name}: not finite", "parameter": "{name}"}}',
                                 content_type="application/json")
    return value


async def _index_segments(request: web.Request) -> web.Response:
    """Read only: ``[name, start, duration, size, init]`` of the segments in [start, end) and
    the live playlist's name (agent/recordings/query.py); names are relative to the stream's directory."""
    from agent.recordings import query
    found = _indexed(request)
    if isinstance(found, web.Response):
        return found
    agent, index, sid, seg = found
    start, end = _seconds(request, "start"), _seconds(request, "end")
    root = agent.cfg.recordings_root

    def answer() -> bytes:  # in a thread, in lines: a day of 2 s segments is 43,200 entries, megabytes
        segments, truncated = query.segments_between(index, sid, start, end, seg)
        return in_lines({"stream_id": sid, "segment_duration": seg, "truncated": truncated,
                         "playlist": query.live_playlist(root, sid)}, "segments", segments)
    return web.Response(body=await asyncio.to_thread(answer), content_type=LINES)


async def _index_newest(request: web.Request) -> web.Response:
    """Read only: the stream's newest complete segment (null when it has none)."""
    from agent.recordings import query
    found = _indexed(request)
    if isinstance(found, web.Response):
        return found
    _, index, sid, seg = found
    return web.json_response({"stream_id": sid, "segment": query.newest(index, sid, time.time(), seg)})


async def _index_known(request: web.Request) -> web.Response:
    """Read only: 200 with the size when the index holds ``name`` (a segment or init), else 404."""
    from agent.recordings import query
    found = _indexed(request)
    if isinstance(found, web.Response):
        return found
    _, index, sid, _ = found
    name = request.query.get("name", "")
    size = query.knows(index, sid, name)
    if size is None:
        return _error(404, "not a segment of this stream's index")
    return web.json_response({"stream_id": sid, "name": name, "size": size})


#: Connections the kernel queues before the loop accepts them.  A full queue makes a unix
#: socket's connect fail at once (EAGAIN), not wait as TCP's does: a burst of clients (the
#: exporter's requests, scripts calling vasctl) must not find it full.
BACKLOG = 1024


class ControlServer:
    """Serves :func:`create_app` on a unix socket; ``close()`` is safe twice."""

    def __init__(self, agent: Controlled, path: Path) -> None:
        self.path = path
        quiet_protocol_errors()
        # keepalive_timeout: a client that connects and sends nothing is dropped after 30 s.
        self._runner = web.AppRunner(create_app(agent), access_log=None, handle_signals=False,
                                     keepalive_timeout=30.0)
        self._site: web.UnixSite | None = None

    async def start(self) -> None:
        await self._runner.setup()
        await self._bind()

    async def _bind(self) -> None:
        # The caller holds the runtime_dir lock, so a socket file here is a dead agent's.
        self.path.unlink(missing_ok=True)
        old_umask = os.umask(0o117)  # created 0660: no window with a wider mode
        try:
            self._site = web.UnixSite(self._runner, str(self.path), backlog=BACKLOG)
            await self._site.start()
        finally:
            os.umask(old_umask)

    async def rebind(self) -> None:
        """Listen again at ``path`` (its file was removed with the runtime_dir)."""
        try:
            if self._site is not None:
                await self._site.stop()
            await self._bind()
            log.warning("control socket %s recreated", self.path)
        except OSError as exc:
            log.error("cannot recreate control socket %s: %s", self.path, exc)

    async def close(self) -> None:
        await self._runner.cleanup()
        self.path.unlink(missing_ok=True)
