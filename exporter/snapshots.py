"""The latest frame of a stream: one keyframe of its newest complete segment, as JPEG.

FFmpeg decodes only keyframes (``-skip_frame nokey``) and stops after the first; the
segment (with its init file for fMP4) is read by the exporter below the recordings root
and fed on stdin, so FFmpeg opens no path.  Each stream's JPEG is kept TTL seconds;
requests that arrive while one is being made wait for it (one decode, however many
ask), and at most CONCURRENCY decodes run at once across all streams.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .children import reap

#: ``newest()`` of a stream: its newest segment's name and a loader of its bytes (init first), or None.
Newest = Callable[[], Awaitable["tuple[str, Callable[[], Awaitable[bytes]]] | None"]]

#: Seconds a JPEG is served without asking the index again (the page polls every few seconds).
TTL = 3.0
#: Decodes at once, whatever the number of cameras (each is a short FFmpeg process).
CONCURRENCY = 2
#: Seconds one decode may take before its FFmpeg is killed.
DECODE_TIMEOUT = 10.0
#: Bytes of a segment read for its frame: FFmpeg cuts segments at keyframes, so the first one is
#: at the start (a 4K keyframe is a few MB).  Reading whole segments cost the disk a segment per
#: tile per poll (100 tiles of 20 MB segments every 10 s: 200 MB/s) and the exporter its size in memory.
MAX_INPUT = 8 << 20
#: An fMP4 init file is a few kB; this bounds a hostile one.
MAX_INIT = 1 << 20
#: Entries untouched this long are dropped (a stream removed, a page closed).
FORGET_AFTER = 120.0


def decode_argv(ffmpeg: str) -> list[str]:
    """FFmpeg reading a segment on stdin, writing the first keyframe as one JPEG to stdout."""
    return [ffmpeg, "-hide_banner", "-v", "error", "-threads", "1", "-skip_frame", "nokey", "-i", "pipe:0",
            "-map", "0:v:0", "-frames:v", "1", "-f", "image2", "-c:v", "mjpeg", "-q:v", "5", "pipe:1"]


class DecodeError(Exception):
    """FFmpeg made no JPEG of the segment (the message says why, without paths)."""


async def decode(ffmpeg: str, data: bytes, timeout: float = DECODE_TIMEOUT) -> bytes:
    """The JPEG of the first keyframe in ``data`` (a segment, after its init file for fMP4)."""
    proc = await asyncio.create_subprocess_exec(*decode_argv(ffmpeg), stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                start_new_session=True)
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), timeout)
    except TimeoutError:
        raise DecodeError(f"no frame within {timeout:g}s") from None
    finally:  # timed out or cancelled: no FFmpeg outlives the call
        if proc.returncode is None:
            await asyncio.shield(reap(proc))
        await _stdin_closed(proc)
    if proc.returncode != 0 or not out.startswith(b"\xff\xd8"):
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise DecodeError(f"FFmpeg decoded no frame ({tail[0][:200]})")
    return out


async def _stdin_closed(proc: asyncio.subprocess.Process, wait: float = 1.0) -> None:
    """Close FFmpeg's stdin and take what its closing raised.  An FFmpeg that stopped reading (a
    segment it cannot decode) leaves a BrokenPipeError there that ``communicate`` does not take,
    and asyncio logs it, with a traceback, when the pipe is collected: one per snapshot a tile
    asks for.  Waits at most ``wait`` s; never cancels the close (the error is taken whenever)."""
    if proc.stdin is None:
        return
    proc.stdin.close()
    closing = asyncio.ensure_future(proc.stdin.wait_closed())
    closing.add_done_callback(lambda task: task.cancelled() or task.exception())
    await asyncio.wait({closing}, timeout=wait)


@dataclass
class _Entry:
    segment: str
    jpeg: bytes
    made_at: float


class Snapshots:
    """Per-stream JPEG cache with shared decodes; ``decodes`` counts FFmpeg runs (bench, tests)."""

    def __init__(self, ffmpeg: str = "ffmpeg", *, ttl: float = TTL, concurrency: int = CONCURRENCY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ffmpeg, self.ttl, self.clock = ffmpeg, ttl, clock
        self.decodes = 0
        self._slots = asyncio.Semaphore(concurrency)
        self._cache: dict[str, _Entry] = {}
        self._busy: dict[str, asyncio.Future[tuple[bytes, str]]] = {}

    async def get(self, sid: str, newest: Newest) -> tuple[bytes, str]:
        """``(jpeg, how)``: ``how`` is ``cached``, ``shared`` (waited for another request's decode)
        or ``decoded``.  ``newest()`` None: no segment yet (LookupError).  A failure reaches every
        request that waited for it."""
        entry = self._cache.get(sid)
        if entry is not None and self.clock() - entry.made_at < self.ttl:
            return entry.jpeg, "cached"
        busy = self._busy.get(sid)
        if busy is not None:
            jpeg, _ = await asyncio.shield(busy)
            return jpeg, "shared"
        future: asyncio.Future[tuple[bytes, str]] = asyncio.get_running_loop().create_future()
        self._busy[sid] = future
        try:
            result = await self._make(sid, newest)
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else DecodeError("cancelled"))
            future.exception()  # retrieved here: a decode nobody else waited for must not warn
            raise
        finally:
            del self._busy[sid]

    async def _make(self, sid: str, newest: Newest) -> tuple[bytes, str]:
        found = await newest()
        if found is None:
            raise LookupError(sid)
        name, load = found
        entry = self._cache.get(sid)
        if entry is not None and entry.segment == name:  # no newer segment: the same frame
            entry.made_at = self.clock()
            return entry.jpeg, "cached"
        async with self._slots:
            self.decodes += 1
            jpeg = await decode(self.ffmpeg, await load())
        self._forget_old()
        self._cache[sid] = _Entry(name, jpeg, self.clock())
        return jpeg, "decoded"

    def _forget_old(self) -> None:
        now = self.clock()
        for sid in [s for s, e in self._cache.items() if now - e.made_at > FORGET_AFTER]:
            del self._cache[sid]
