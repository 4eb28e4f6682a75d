"""A recorded range as one MP4: FFmpeg's concat demuxer, stream copy, fragmented, streamed.

The segments are the ones the agent's index gives for the range, each opened by the
exporter below the recordings root without following a symlink; FFmpeg gets the open
files (``/dev/fd/N``, which reopens that very file, never a path in the tree) in an
``ffconcat`` script on stdin.  A range whose segments add up to more than
``exporter.clip_max_size`` (or more than MAX_SEGMENTS files) is refused with 413 before a
byte is sent.  The FFmpeg child is killed the moment the client goes away, or once it has
accepted nothing for ``media.WRITE_STALL`` seconds (else two stuck clients hold both slots).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from .children import reap
from .media import open_below, write_or_drop

#: Files one clip may join (each is an open descriptor while it is exported).
MAX_SEGMENTS = 5000
#: Clips exported at once (each is an FFmpeg process copying at disk speed).
CONCURRENCY = 2
CHUNK = 1 << 16
FRAGMENTED = "frag_keyframe+empty_moov+default_base_moof"


def pick(segments: Sequence[Sequence], start: float, end: float) -> list[Sequence]:
    """The segments whose middle lies in [start, end): the clip then runs within one segment of
    the range (half a segment at either end); a range shorter than that gets its best segment."""
    chosen = [s for s in segments if start <= s[1] + s[2] / 2 < end]
    if chosen or not segments:
        return chosen
    return [max(segments, key=lambda s: min(s[1] + s[2], end) - max(s[1], start))]


def refusal(segments: Sequence[Sequence], cap: int) -> str | None:
    """Why the clip of ``segments`` is not made (413), or None."""
    total = sum(s[3] for s in segments)
    if total > cap:
        return (f"the range holds {total / 2**20:.0f} MiB of recordings; a clip may hold at most "
                f"{cap / 2**20:.0f} MiB (exporter.clip_max_size): ask a shorter range")
    if len(segments) > MAX_SEGMENTS:
        return f"the range holds {len(segments)} segments; a clip may join at most {MAX_SEGMENTS}: ask a shorter range"
    return None


def concat_script(files: Sequence[Sequence[int]]) -> str:
    """The ffconcat script: each file is one fd (MPEG-TS) or several read as one (fMP4: an init,
    then a run's segments, whose fragments carry continuous timestamps)."""
    lines = ["ffconcat version 1.0"]
    for fds in files:
        lines.append(f"file 'file:/dev/fd/{fds[0]}'" if len(fds) == 1
                     else "file 'concat:" + "|".join(f"/dev/fd/{fd}" for fd in fds) + "'")
    return "\n".join(lines) + "\n"


def clip_argv(ffmpeg: str) -> list[str]:
    """FFmpeg joining the script's files without re-encoding into a fragmented MP4 on stdout."""
    return [ffmpeg, "-hide_banner", "-v", "error", "-f", "concat", "-safe", "0",
            "-protocol_whitelist", "file,pipe,concat", "-i", "pipe:0", "-map", "0:v:0", "-map", "0:a?",
            "-c", "copy", "-movflags", FRAGMENTED, "-f", "mp4", "pipe:1"]


def open_all(root: Path, sid: str, segments: Sequence[Sequence]) -> tuple[list[int], list[list[int]]]:
    """Open every segment (and each init once): ``(every fd, the script's files)``.  MPEG-TS
    segments are a file each (the concat demuxer joins runs whose clocks restart); fMP4 segments
    of one run and init are one file.  OSError closes what was opened."""
    from .playlists import run_of
    fds: list[int] = []
    inits: dict[str, int] = {}
    files: list[list[int]] = []
    last: tuple[str, str] | None = None
    try:
        for seg in segments:
            init = seg[4]
            if init and init not in inits:
                inits[init] = open_below(root, sid, init)
                fds.append(inits[init])
            fd = open_below(root, sid, seg[0])
            fds.append(fd)
            if init and last == (init, run_of(seg[0])):
                files[-1].append(fd)
            else:
                files.append([inits[init], fd] if init else [fd])
            last = (init, run_of(seg[0])) if init else None
    except OSError:
        close_all(fds)
        raise
    return fds, files


def close_all(fds: Sequence[int]) -> None:
    """Close the descriptors :func:`open_all` opened."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


async def stream(request: web.Request, response: web.StreamResponse, ffmpeg: str, fds: Sequence[int],
                 files: Sequence[Sequence[int]]) -> web.StreamResponse:
    """Run FFmpeg and copy its output to the client; FFmpeg is killed when the client goes away
    (a write fails, or the handler is cancelled) and always reaped."""
    proc = await asyncio.create_subprocess_exec(*clip_argv(ffmpeg), stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                                                pass_fds=tuple(fds), start_new_session=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(concat_script(files).encode())
        proc.stdin.close()
        await response.prepare(request)
        while chunk := await proc.stdout.read(CHUNK):
            await write_or_drop(request, response, chunk)  # ConnectionResetError once the client is gone or stuck
        if await proc.wait() != 0 and request.transport is not None:
            request.transport.close()  # no last chunk: the client sees a broken download, not a short clip
            return response
        await response.write_eof()
    finally:
        if proc.returncode is None:
            await asyncio.shield(reap(proc))
    return response
