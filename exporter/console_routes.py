"""The console's routes: stream status, live and recorded HLS, segments, snapshots, clips.

Video needs a ``viewer`` (or ``admin``) token: 401 without one, 403 with another scope.
Every name served comes from the agent's index (exporter/media.py); the status route is
as open as /v2/health (a read token when ``exporter.require_read_token`` is on).
Errors are JSON: 400 a bad parameter (named), 404 unknown stream or name or nothing
recorded, 413 a clip past ``exporter.clip_max_size``, 502 FFmpeg made no frame,
503 the agent or its index cannot answer.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import clips, console_static, playlists
from .console_view import console_streams
from .frame import Routes, json_error
from .health import NO_STORE
from .media import Index, NotFound, Unavailable, content_type, open_below, read_below, write_or_drop
from .recordings import root_of
from .snapshots import MAX_INIT, MAX_INPUT, DecodeError, Snapshots
from .timerange import BadParameter, time_range
from .turns import in_turns

HLS = "application/vnd.apple.mpegurl"
#: A live playlist is a few kilobytes; FFmpeg's is read up to this.
PLAYLIST_LIMIT = 1 << 20
SEGMENT_CHUNK = 1 << 18
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guarded(handler: Handler) -> Handler:
    """The answers every console route gives the same way."""
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadParameter as exc:
            return json_error(400, str(exc), parameter=exc.parameter)
        except NotFound as exc:
            return json_error(404, str(exc))
        except Unavailable as exc:
            return json_error(503, str(exc))
    run.__doc__ = handler.__doc__
    return run


class ConsoleRoutes:
    """Handlers; ``ctx`` is the app's Context (view, settings, auth, agent control)."""

    def __init__(self, ctx: Any, ffmpeg: str | None = None) -> None:
        self.ctx, self.index = ctx, Index(ctx)
        self.ffmpeg = ffmpeg or shutil.which("ffmpeg") or "ffmpeg"
        self.snapshots = Snapshots(self.ffmpeg)
        self.clip_slots = clips.CONCURRENCY

    def routes(self, r: Routes) -> None:
        """Add the console's routes (and its page and files)."""
        r.add_get("/v2/console/streams", self.streams)
        r.add_get("/v2/streams/{stream_id}/live.m3u8", _guarded(self.live))
        r.add_get("/v2/streams/{stream_id}/snapshot.jpg", _guarded(self.snapshot))
        r.add_get("/v2/recordings/{stream_id}/segments/{name:.+}", _guarded(self.segment))
        r.add_get("/v2/recordings/{stream_id}/timeline", _guarded(self.timeline))
        r.add_get("/v2/recordings/{stream_id}/playlist.m3u8", _guarded(self.playlist))
        r.add_get("/v2/recordings/{stream_id}/clip.mp4", _guarded(self.clip))
        console_static.routes(r)

    def _viewer(self, request: web.Request) -> tuple[str, Any]:
        """The stream id once the token may watch video; and the recordings root (503 without one)."""
        self.ctx.auth.check(request, "viewer")
        root = root_of(self.ctx.view())
        if root is None:
            raise Unavailable("the agent's state names no recordings root")
        return request.match_info["stream_id"], root

    async def streams(self, request: web.Request) -> web.Response:
        """Every stream's tile: state, uptime, codec, resolution, last error, recording, viewers."""
        if self.ctx.settings.require_read_token:
            self.ctx.auth.check(request, ("read", "viewer"))
        return web.json_response(console_streams(self.ctx.view(), time.time()))

    async def live(self, request: web.Request) -> web.Response:
        """The stream's live playlist with its URIs turned into segment routes."""
        sid, root = self._viewer(request)
        now = time.time()
        name = (await self.index.segments(sid, now, now)).get("playlist")
        if not name:
            raise NotFound(f"stream '{sid}' has no live playlist (not recording, or no segment yet)")
        try:
            text = await asyncio.to_thread(read_below, root, sid, name, PLAYLIST_LIMIT)
        except OSError:
            raise NotFound(f"stream '{sid}' has no live playlist") from None
        return web.Response(text=playlists.rewrite_live(sid, text.decode(errors="replace")), content_type=HLS)

    async def segment(self, request: web.Request) -> web.StreamResponse:
        """One segment or init file, by a name the agent's index holds for the stream."""
        sid, root = self._viewer(request)
        name = request.match_info["name"]
        await self.index.known(sid, name)  # NotFound unless indexed
        try:
            fd = await asyncio.to_thread(open_below, root, sid, name)
        except (OSError, ValueError):
            raise NotFound("not a segment of this stream's index") from None
        with os.fdopen(fd, "rb", buffering=0) as fh:
            size = os.fstat(fd).st_size
            response = web.StreamResponse(headers={"Content-Type": content_type(name), "Content-Length": str(size),
                                                   **NO_STORE})
            await response.prepare(request)
            left = size
            while left > 0 and (chunk := await asyncio.to_thread(fh.read, min(SEGMENT_CHUNK, left))):
                await write_or_drop(request, response, chunk)
                left -= len(chunk)
        await response.write_eof()
        return response

    async def snapshot(self, request: web.Request) -> web.Response:
        """A JPEG of one keyframe of the newest complete segment (cached, decodes shared)."""
        sid, root = self._viewer(request)

        async def newest() -> tuple[str, Callable[[], Awaitable[bytes]]] | None:
            seg = await self.index.newest(sid)
            if seg is None:
                return None

            def load() -> bytes:
                init = read_below(root, sid, seg[4], MAX_INIT) if seg[4] else b""
                return init + read_below(root, sid, seg[0], MAX_INPUT)
            return seg[0], lambda: asyncio.to_thread(load)

        try:
            jpeg, how = await self.snapshots.get(sid, newest)
        except LookupError:
            raise NotFound(f"stream '{sid}' has no recorded segment yet") from None
        except OSError:
            raise NotFound(f"the newest segment of '{sid}' is gone (deleted by retention?); ask again") from None
        except DecodeError as exc:
            return json_error(502, f"no frame from the newest segment of '{sid}': {exc}")
        return web.Response(body=jpeg, content_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=2", "X-Vas-Snapshot": how})

    async def _range(self, request: web.Request, *, required: bool = False) -> tuple[str, float, float, dict]:
        sid, _ = self._viewer(request)
        view = self.ctx.view()
        if view.streams and sid not in {s.get("id") for s in view.streams}:  # 404 before judging the range
            raise NotFound(f"unknown stream '{sid}'")
        start, end = time_range(request.query, time.time(), required=required)
        found = await self.index.segments(sid, start, end)
        if found.get("truncated"):
            raise BadParameter("end", f"the range holds more than {len(found['segments'])} segments; "
                                      "ask a shorter one")
        return sid, start, end, found

    async def timeline(self, request: web.Request) -> web.Response:
        """Recorded ranges and gaps in [start, end] (default: the last 24 h)."""
        sid, start, end, found = await self._range(request)
        ranges, gaps = await in_turns(playlists.timeline_steps(found["segments"], start, end))
        return web.json_response({"stream_id": sid, "start": start, "end": end, "ranges": ranges, "gaps": gaps})

    async def playlist(self, request: web.Request) -> web.StreamResponse:
        """A VOD playlist of [start, end] (default: the last 24 h), sent a piece per turn of the
        event loop (a month is 13 MB: /livez and /metrics are answered between two pieces)."""
        sid, _, _, found = await self._range(request)
        if not found["segments"]:
            raise NotFound(f"stream '{sid}' has no recording in that range")
        headers = {"Content-Type": HLS, **NO_STORE}
        if request.method == "HEAD":
            return web.Response(headers=headers)
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        for part in playlists.vod_parts(sid, found["segments"]):
            if part:
                await write_or_drop(request, response, part.encode())
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    async def clip(self, request: web.Request) -> web.StreamResponse:
        """[start, end] as one MP4 (stream copy), streamed; 413 past the size cap, before any byte."""
        sid, start, end, found = await self._range(request, required=True)
        chosen = await asyncio.to_thread(clips.pick, found["segments"], start, end)
        if not chosen:
            raise NotFound(f"stream '{sid}' has no recording in that range")
        refused = clips.refusal(chosen, self.ctx.settings.clip_max_bytes)
        if refused:
            return json_error(413, refused)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start))
        headers = {"Content-Type": "video/mp4",
                   "Content-Disposition": f'attachment; filename="{_safe(sid)}_{stamp}.mp4"', **NO_STORE}
        if request.method == "HEAD":  # what a GET would answer, without running an export into nowhere
            return web.Response(headers=headers)
        if self.clip_slots <= 0:
            return json_error(503, f"{clips.CONCURRENCY} clips are being exported; try again when one is done")
        _, root = self._viewer(request)
        self.clip_slots -= 1  # taken before the first await: two requests cannot both pass the check
        try:
            fds, files = await asyncio.to_thread(clips.open_all, root, sid, chosen)
        except (OSError, ValueError):
            self.clip_slots += 1
            raise NotFound("a segment of the range is gone (deleted by retention?); ask again") from None
        response = web.StreamResponse(headers=headers)
        try:
            return await clips.stream(request, response, self.ffmpeg, fds, files)  # closes fds
        finally:
            self.clip_slots += 1


def _safe(text: str) -> str:
    """A file name part with only plain characters (stream ids are already; quotes never)."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in text)[:64]
