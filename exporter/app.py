"""``create_app(settings) -> web.Application``: health, the /v2 API, /v2/metrics and the console.

The exporter is the only network-facing part of the node.  It reads the
agent's snapshot (cached until the file is replaced), samples the streams'
processes from /proc while scrapes come, and sends every change to the agent's control socket.
No response carries a stack trace: a middleware turns any failure into JSON.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from agent.config.exporter import Settings

from .api import Api, json_error
from .auth import Auth
from .console_routes import ConsoleRoutes
from .control import AgentControl
from .health import Health, readiness
from .metrics import Metrics
from .openapi import spec
from .recordings import RecordingStats
from .source import OBSERVE_EVERY, SnapshotSource, View

log = logging.getLogger("vas.exporter")


class Context:
    """What the handlers share: settings, the snapshot, metrics, auth and the agent."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.source = SnapshotSource(settings.snapshot_path, settings.stale_after)
        self.recordings = RecordingStats()
        self.metrics = Metrics(self.recordings)
        self.auth = Auth(settings.tokens_file)
        self.control = AgentControl(settings.socket_path)
        self.health: Health | None = None

    def apply(self, settings: Settings) -> None:
        """New settings on SIGHUP: readiness thresholds and tokens (listen needs a restart)."""
        self.settings = settings
        self.source.stale_after = settings.stale_after
        if self.health is not None:
            self.health.settings, self.health._cache = settings, None
        self.auth.path = settings.tokens_file
        self.auth.reload()

    def view(self) -> View:
        return self.source.read()

    def readiness(self, view: View) -> dict[str, Any]:
        return readiness(view, self.settings)


CONTEXT = web.AppKey("context", Context)
#: The one answer that may be cached: the API's description changes only with the code.
OPENAPI = "/v2/openapi.json"


def create_app(settings: Settings) -> web.Application:
    """The exporter's application (served by ``vas-exporter``, or by tests)."""
    ctx = Context(settings)
    app = web.Application(middlewares=[_frame(ctx)])
    app[CONTEXT] = ctx
    ctx.health = Health(settings, ctx.view, ctx.source)
    ctx.health.routes(app)
    Api(ctx).routes(app)
    ConsoleRoutes(ctx).routes(app)
    app.router.add_get("/v2/metrics", _metrics)
    openapi = json.dumps(spec()).encode()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=openapi, content_type="application/json")

    app.router.add_get(OPENAPI, openapi_json)
    app.cleanup_ctx.append(_background)
    return app


async def _background(app: web.Application) -> AsyncIterator[None]:
    """The snapshot's watch, the recording scan and the processes' sampling while the app runs;
    the agent session closed at the end."""
    import asyncio
    ctx = app[CONTEXT]
    # A new snapshot's metrics are rendered the moment it lands, on the loop, before any
    # request that follows it: a scrape finds the text done and never the previous one.
    def render() -> None:
        ctx.metrics.prepare(ctx.view())
    ctx.source.listeners.append(render)
    ctx.source.watch()
    tasks = [asyncio.create_task(ctx.recordings.run(ctx.view, render), name="recording-scan"),
             asyncio.create_task(_tick_snapshot(ctx), name="snapshot-observe"),
             asyncio.create_task(ctx.metrics.sampler.run(lambda: ctx.view().streams), name="process-sample")]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)  # cancelled on purpose
    ctx.source.close()
    await ctx.control.close()


async def _tick_snapshot(ctx: Context) -> None:
    """Without a watch, a frozen agent's snapshot is seen to stay put even when it is dated
    ahead of the clock (a backward wall-clock step), where its mtime alone would say "fresh";
    and the watch is re-armed once it can be (the directory re-created)."""
    import asyncio
    while True:
        ctx.source.tick()
        await asyncio.sleep(OBSERVE_EVERY)


async def _metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = ctx.metrics.render(ctx.view(), stale_after=ctx.settings.stale_after)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8",
                                            "Cache-Control": "no-store"})


def _frame(ctx: Context) -> Any:
    """The app's one middleware (bound to ``ctx``)."""
    observe, clock = ctx.metrics.requests.observe, time.perf_counter  # bound once: every check pays each look-up
    #: Route -> (its template, whether its answers get no-store): the routes are fixed once the
    #: app runs (a 404's route is made per request and never kept here).
    routes: dict[Any, tuple[str, bool]] = {}

    @web.middleware
    async def frame(request: web.Request, handler: Any) -> web.StreamResponse:
        """Around every request, in one middleware (each layer costs a load balancer's check
        as much as the check itself): the read scope, errors as JSON, Cache-Control: no-store,
        and vas_api_request_duration_seconds by route template (never the raw path)."""
        started, status, template = clock(), 500, UNMATCHED
        try:
            route = request.match_info.route
            template, no_store = routes.get(route) or _route_rule(routes, route)
            try:
                if ctx.settings.require_read_token:
                    _check_read_scope(ctx, request)
                response = await handler(request)
            except web.HTTPException as exc:
                if exc.content_type == "application/json" or exc.status < 400:
                    status = exc.status
                    if no_store:  # aiohttp answers with the exception itself
                        exc.headers.setdefault("Cache-Control", "no-store")
                    raise
                response = _json_answer(exc)
            except Exception as exc:
                if isinstance(exc, ConnectionError) and _client_left(request):
                    response = web.Response(status=CLIENT_LEFT)  # counted; never sent, never logged
                else:
                    log.exception("%s %s failed", request.method, request.path)
                    response = json_error(500, "internal error (logged by vas-exporter)")
            status = response.status
            if no_store and not response.prepared:  # a handler that streams sets its own (console_routes)
                response.headers.setdefault("Cache-Control", "no-store")
            return response
        finally:
            observe(template, request.method, status, clock() - started)
    return frame


#: The status a request is counted under when its client left, or stopped reading, in the middle
#: of the answer (nginx's "client closed request"): the client's doing, not an error of the node.
CLIENT_LEFT = 499


def _client_left(request: web.Request) -> bool:
    """True when the request's connection is gone or going (a write to it failed, or
    write_or_drop dropped a client that took nothing)."""
    return request.transport is None or request.transport.is_closing()


#: The label of a request no route matched (a 404, or a 405 with its Allow).
UNMATCHED = "unmatched"


def _route_rule(known: dict[Any, tuple[str, bool]], route: Any) -> tuple[str, bool]:
    """The route's template (``/v2/streams/{id}``), the label a request is counted under, and
    whether its answers get Cache-Control: no-store: every answer describes the node now, no
    proxy or browser may serve it later (the OpenAPI document alone is static)."""
    resource = route.resource
    if resource is None:
        return UNMATCHED, True
    template: str = resource.canonical
    return known.setdefault(route, (template, template != OPENAPI))


def _check_read_scope(ctx: Context, request: web.Request) -> None:
    """``exporter.require_read_token``: the /v2/health reads need a ``read`` or ``admin``
    token (load balancers' /livez, /readyz, /healthz never do; changes check their own scope)."""
    if (ctx.settings.require_read_token and request.method in ("GET", "HEAD")
            and request.path.startswith("/v2/health/")):
        ctx.auth.check(request, "read")


def _json_answer(exc: web.HTTPException) -> web.Response:
    """An HTTP error raised as text (aiohttp's 404, 405, ...), answered as JSON instead."""
    allow = exc.headers.get("Allow")
    response = json_error(exc.status, exc.reason, **({"allow": allow} if allow is not None else {}))
    if allow is not None:  # RFC 9110: a 405 names the methods the resource has
        response.headers["Allow"] = allow
    return response


__all__ = ["create_app", "CONTEXT", "Context"]
