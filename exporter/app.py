"""``create_app(settings) -> web.Application``: health, the /v2 API, /v2/metrics and the console.

The exporter is the only network-facing part of the node.  It reads the
agent's snapshot (cached until the file is replaced), samples the streams'
processes from /proc while scrapes come, and sends every change to the agent's control socket.
No response carries a stack trace: each route's frame turns any failure into JSON (exporter/frame.py).
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from agent.config.exporter import Settings

from .api import Api
from .auth import Auth
from .console_routes import ConsoleRoutes
from .control import AgentControl
from .frame import Routes
from .health import Health, readiness
from .metrics import Metrics
from .openapi import spec
from .recordings import RecordingStats
from .source import OBSERVE_EVERY, SnapshotSource, View


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
#: The API's description: it changes only with the code, the one answer that may be cached.
OPENAPI = "/v2/openapi.json"


def create_app(settings: Settings) -> web.Application:
    """The exporter's application (served by ``vas-exporter``, or by tests)."""
    ctx = Context(settings)
    app = web.Application()  # no middleware: each route is framed as it is added (exporter/frame.py)
    app[CONTEXT] = ctx
    routes = Routes(app, ctx.metrics.requests.observe, _read_check(ctx))
    ctx.health = Health(settings, ctx.view, ctx.source)
    ctx.health.routes(routes)
    Api(ctx).routes(routes)
    ConsoleRoutes(ctx).routes(routes)
    routes.add_get("/v2/metrics", _metrics)
    openapi = json.dumps(spec()).encode()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=openapi, content_type="application/json")

    routes.add_get(OPENAPI, openapi_json, no_store=False)  # the one answer that may be cached
    routes.close()
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


def _read_check(ctx: Context) -> Any:
    """``exporter.require_read_token``: the /v2/health reads need a ``read`` or ``admin`` token
    (load balancers' /livez, /readyz, /healthz never do; changes check their own scope)."""
    def check(request: web.Request) -> None:
        if ctx.settings.require_read_token:
            ctx.auth.check(request, "read")
    return check


__all__ = ["create_app", "CONTEXT", "Context"]
