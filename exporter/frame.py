"""Every route's frame: answers counted by route template, errors as JSON, Cache-Control: no-store,
and the read scope of the /v2/health reads.

Each handler is framed once, when its route is added (``Routes``), not by an aiohttp
middleware: a middleware costs every request aiohttp's chain and a look-up of the route
it matched, 5 % of a load balancer's check (11k of 207k instructions,
``bench/readyz_cpu.py --instructions``).  Here the route's template and rules are bound
into its handler.  A request no route matches (a 404, or a 405 with its Allow) reaches
the last route, ``Routes.close``'s, and is answered in JSON and counted as ``unmatched``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("vas.exporter")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: The label of a request no route matched (a 404, or a 405 with its Allow).
UNMATCHED = "unmatched"
#: The status a request is counted under when its client left, or stopped reading, in the middle
#: of the answer (nginx's "client closed request"): the client's doing, not an error of the node.
CLIENT_LEFT = 499
#: The reads ``exporter.require_read_token`` guards (load balancers' /livez, /readyz, /healthz never).
READ_SCOPED = "/v2/health/"


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    """An error answer: JSON ``{"error": ...}``, never cached."""
    return web.json_response({"error": message, **extra}, status=status, headers={"Cache-Control": "no-store"})


class Routes:
    """Adds routes to ``app`` with each handler in its frame; ``close()`` adds the catch-all last.

    ``observe(template, method, status, seconds)`` counts each answer; ``read_check(request)``
    runs before a /v2/health read (it raises web.HTTPUnauthorized/Forbidden as JSON to refuse).
    """

    def __init__(self, app: web.Application, observe: Callable[[str, str, int, float], None],
                 read_check: Callable[[web.Request], None]) -> None:
        self.app, self._observe, self._read_check = app, observe, read_check
        self._rest: web.AbstractResource | None = None

    def add_get(self, path: str, handler: Handler, *, no_store: bool = True) -> None:
        """GET and HEAD. ``no_store=False`` only for an answer that changes only with the code."""
        self._add(("HEAD", "GET"), path, handler, no_store=no_store, read_scoped=path.startswith(READ_SCOPED))

    def add_post(self, path: str, handler: Handler) -> None:
        self._add(("POST",), path, handler)

    def add_delete(self, path: str, handler: Handler) -> None:
        self._add(("DELETE",), path, handler)

    def add_options(self, path: str, handler: Handler) -> None:
        self._add(("OPTIONS",), path, handler)

    def _add(self, methods: tuple[str, ...], path: str, handler: Handler, **rules: bool) -> None:
        """The route, counted under its resource's template: ``/console/{path}``, never the
        ``{path:.+}`` it was added with (the OpenAPI path, which dashboards select on)."""
        resource = self.app.router.add_resource(path)  # the same path again: the same resource
        framed = self._framed(resource.canonical, handler, **rules)
        for method in methods:
            resource.add_route(method, framed)

    def close(self) -> None:
        """The last route: every request no other route matched, answered 404 or 405 (with Allow)."""
        self._rest = _Anywhere()
        self.app.router.register_resource(self._rest)
        self._rest.add_route("*", self._framed(UNMATCHED, self._unmatched))

    async def _unmatched(self, request: web.Request) -> web.StreamResponse:
        if request.method in ("GET", "HEAD") and request.path.startswith(READ_SCOPED):
            self._read_check(request)  # no token: refused before saying which health paths exist
        methods: set[str] = set()
        for resource in self.app.router.resources():
            if resource is not self._rest:  # its "*" would allow every method
                methods |= (await resource.resolve(request))[1]
        if methods:  # the path is known, not with this method (RFC 9110: a 405 names the methods)
            raise web.HTTPMethodNotAllowed(request.method, methods)
        raise web.HTTPNotFound()

    def _framed(self, template: str, handler: Handler, *, no_store: bool = True,
                read_scoped: bool = False) -> Handler:
        """``handler`` inside the frame, its route's template and rules bound once."""
        observe, clock, read_check = self._observe, time.perf_counter, self._read_check

        async def frame(request: web.Request) -> web.StreamResponse:
            """The read scope, errors as JSON, Cache-Control: no-store, and
            vas_api_request_duration_seconds by route template (never the raw path)."""
            started, status = clock(), 500
            try:
                try:
                    if read_scoped:
                        read_check(request)
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


class _Anywhere(web.Resource):
    """The last resource: any path, a newline in it and ``*`` (``OPTIONS *``) too, which no
    ``/``-pattern matches.  Its template puts it where the router looks last, after every other
    resource, and only when none matched the path.  An empty path (``CONNECT host:443``, an
    absolute URL with nothing after the host) reaches no resource: aiohttp answers it
    (docs/api.md)."""

    def __init__(self) -> None:
        super().__init__(name=UNMATCHED)

    @property
    def canonical(self) -> str:
        return "/{unmatched}"

    def _match(self, path: str) -> dict[str, str]:
        return {}

    def raw_match(self, path: str) -> bool:
        return False  # never the resource a new route is added to

    def get_info(self) -> dict[str, str]:  # type: ignore[override]
        return {"unmatched": "any path"}

    def url_for(self) -> Any:  # type: ignore[override]
        raise ValueError("the catch-all has no URL")

    def add_prefix(self, prefix: str) -> None:
        raise ValueError("the catch-all takes no prefix")


def _client_left(request: web.Request) -> bool:
    """True when the request's connection is gone or going (a write to it failed, or
    write_or_drop dropped a client that took nothing)."""
    return request.transport is None or request.transport.is_closing()


def _json_answer(exc: web.HTTPException) -> web.Response:
    """An HTTP error raised as text (aiohttp's 404, 405, ...), answered as JSON instead."""
    allow = exc.headers.get("Allow")
    response = json_error(exc.status, exc.reason, **({"allow": allow} if allow is not None else {}))
    if allow is not None:  # RFC 9110: a 405 names the methods the resource has
        response.headers["Allow"] = allow
    return response


__all__ = ["Routes", "UNMATCHED", "CLIENT_LEFT", "Handler", "json_error"]
