"""The recordings the console serves: asked of the agent's index, opened without a symlink.

The exporter never walks the recordings tree and never takes a path from a request:
a name is served only when the agent's retention index holds it for that stream
(``/index/{id}/known`` on the control socket), and it is opened below the recordings
root one component at a time with ``O_NOFOLLOW`` (agent/nofollow.py), so a link planted
in a stream's folder leads nowhere.
"""
from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from agent.nofollow import open_file_below

from .control import AgentUnreachable

log = logging.getLogger("vas.exporter")
CONTENT_TYPES = {".ts": "video/mp2t", ".m4s": "video/iso.segment", ".mp4": "video/mp4", ".mkv": "video/x-matroska",
                 ".m3u8": "application/vnd.apple.mpegurl"}


class Unavailable(Exception):
    """The agent cannot answer (down, hung, no index): the route answers 503 with this text."""


class NotFound(Exception):
    """The agent does not know the stream or name: the route answers 404 with this text."""


#: Seconds a client may take to accept one chunk of video before it is dropped: one that stopped
#: reading (a laptop shut mid-download keeps its connection for many minutes) must not keep an
#: FFmpeg, descriptors and one of the few clip slots forever.
WRITE_STALL = 30.0


async def write_or_drop(request: web.Request, response: web.StreamResponse, chunk: bytes,
                        stall: float = WRITE_STALL) -> None:
    """Write ``chunk``; a client that accepts nothing for ``stall`` seconds is disconnected
    (ConnectionResetError, as when it leaves by itself)."""
    try:
        await asyncio.wait_for(response.write(chunk), stall)
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError(f"the client took no data for {stall:g}s") from None


def content_type(name: str) -> str:
    """The Content-Type of a segment, init file or playlist, by its extension."""
    return CONTENT_TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")


def parts_of(sid: str, name: str) -> list[str]:
    """``[stream, folder..., file]`` below the recordings root; ValueError for a name that is not
    a plain relative path (the index holds no such name anyway)."""
    parts = [sid, *name.split("/")]
    if any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise ValueError(f"bad name {name!r}")
    return parts


def read_below(root: Path, sid: str, name: str, limit: int) -> bytes:
    """The bytes of ``root/sid/name`` (at most ``limit``), no symlink followed (OSError otherwise)."""
    fd = open_file_below(root, parts_of(sid, name))
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit)


def open_below(root: Path, sid: str, name: str) -> int:
    """A read-only fd of ``root/sid/name``, no symlink followed (OSError otherwise)."""
    return open_file_below(root, parts_of(sid, name))


class Index:
    """The agent's retention index as the console reads it (read-only control routes)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    async def _get(self, path: str) -> dict[str, Any]:
        view, stale_after = self.ctx.view(), self.ctx.settings.stale_after
        if not view.fresh(stale_after) or view.data is None:
            raise Unavailable("the agent is not running or not responding: its recordings index cannot be asked")
        try:
            status, body = await self.ctx.control.call("GET", path, alive=lambda: self.ctx.view().fresh(stale_after))
        except AgentUnreachable as exc:
            raise Unavailable(str(exc)) from None
        if status == 404:
            raise NotFound(str(body.get("error") or "not found"))
        if status != 200:
            raise Unavailable(f"the agent's index answered {status}: {body.get('error') or 'no reason given'}")
        if "error" in body:  # a 200 whose body did not parse (exporter/control.py)
            log.warning("unreadable index answer to %s: %r", path.split("?")[0], body["error"][:200])
            raise Unavailable("the agent's index answer was unreadable (logged by vas-exporter)")
        return body

    async def segments(self, sid: str, start: float, end: float) -> dict[str, Any]:
        """``{"segments": [[name, start, duration, size, init], ...], "truncated", "playlist", ...}``."""
        body = await self._get(f"/index/{quote(sid, safe='')}/segments?{urlencode({'start': start, 'end': end})}")
        if not isinstance(body.get("segments"), list):
            raise Unavailable("the agent's index answer had no segments list")
        return body

    async def newest(self, sid: str) -> list | None:
        """The newest complete segment, or None."""
        return (await self._get(f"/index/{quote(sid, safe='')}/newest")).get("segment")

    async def known(self, sid: str, name: str) -> int:
        """The size of ``name`` when the index holds it; NotFound otherwise."""
        body = await self._get(f"/index/{quote(sid, safe='')}/known?{urlencode({'name': name})}")
        return int(body["size"])
