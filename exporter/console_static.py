"""The console's page and static files (``/`` and ``/console/...``), from exporter/console/.

They hold no data, so they need no token; every answer carries a strict CSP (nothing
from outside the node, no inline script).  Files are opened below exporter/console/
without following a symlink, like the recordings; anything else is a JSON 404.
"""
from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web

from agent.nofollow import open_file_below

from .frame import Routes, json_error

CONSOLE_DIR = Path(__file__).resolve().parent / "console"
CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; worker-src 'self' blob:; "
       "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; "
       "base-uri 'none'")
TYPES = {".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
         ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".txt": "text/plain",
         ".json": "application/json", ".map": "application/json", ".woff2": "font/woff2"}
#: Short names the page uses for vendored files (kept with their licence in the console's vendor/ folder).
ALIASES = {"hls.min.js": "vendor/hls.min.js"}
#: A console file larger than this is not one of ours.
MAX_FILE = 8 << 20


def _with_csp(response: web.Response) -> web.Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def read_console_file(rel: str, directory: Path = CONSOLE_DIR) -> bytes | None:
    """The bytes of ``directory/rel``, or None (missing, a symlink on the way, not a file, too big)."""
    parts = rel.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    try:
        fd = open_file_below(directory, parts)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_FILE + 1)
    return data if len(data) <= MAX_FILE else None


def answer(rel: str) -> web.Response:
    """The file's answer with its type and the CSP; a JSON 404 (with the CSP) when there is none."""
    data = read_console_file(rel)
    if data is None:
        return _with_csp(json_error(404, f"no console file '{rel[:80]}'"))
    kind = TYPES.get(os.path.splitext(rel)[1].lower(), "application/octet-stream")
    charset = "utf-8" if kind.startswith("text/") or kind in ("application/json", "image/svg+xml") else None
    return _with_csp(web.Response(body=data, content_type=kind, charset=charset))


async def page(request: web.Request) -> web.Response:
    """``GET /``: the console's page."""
    return answer("index.html")


async def asset(request: web.Request) -> web.Response:
    """``GET /console/{path}``: a static file of the console."""
    rel = request.match_info["path"]
    return answer(ALIASES.get(rel, rel))


def routes(r: Routes) -> None:
    """Add the page and its files."""
    r.add_get("/", page)
    r.add_get("/console/{path:.+}", asset)
