"""A stream's real H.264 profile-level-id, read with ffprobe from its SPS.

The SFU producer must be announced with the profile the camera sends: a
mediasoup router without a Constrained Baseline entry refuses a producer
without one ("unsupported codec"), and viewers would be told 42e01f for a
High-profile camera.  The agent never transcodes, so it asks the source:
ffprobe reads the stream's extradata (the SPS from the RTSP SDP's
sprop-parameter-sets, or an avcC box) and its first three bytes after the NAL
header are the profile-level-id.  Bounded: one ffprobe per stream at a time,
killed after PROBE_TIMEOUT; a failure means "not announced" (the SFU's default).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from agent.config.model import StreamConfig
from agent.supervise.ffmpeg import input_args
from agent.supervise.process import Child

#: Seconds one probe may take (an RTSP DESCRIBE and a few packets take about one).
PROBE_TIMEOUT = 5.0
#: Bytes of ffprobe's answer at most (a JSON object of a few fields and one extradata hex dump).
PROBE_OUTPUT = 1 << 20
_HEX_LINE = re.compile(r"^[0-9a-f]{8}: ((?:[0-9a-f]{2,4} ?)+)", re.MULTILINE)


def ffprobe_for(ffmpeg: str) -> str:
    """The ffprobe next to ``ffmpeg`` (same directory), else the one on PATH."""
    sibling = Path(ffmpeg).with_name("ffprobe")
    return str(sibling) if os.sep in ffmpeg and sibling.is_file() else "ffprobe"


def probe_argv(ffprobe: str, stream: StreamConfig) -> list[str]:
    """ffprobe's argv: the stream's own input options, the first video stream's extradata as hex."""
    return [ffprobe, "-v", "error", *input_args(stream), "-select_streams", "v:0",
            "-show_entries", "stream=codec_name,extradata", "-show_data", "-of", "json"]


def profile_from_probe(output: bytes | str) -> str | None:
    """The profile-level-id in ffprobe's JSON (``extradata`` is a hex dump), or None."""
    try:
        streams = json.loads(output).get("streams") or []
    except (ValueError, AttributeError):
        return None
    if not streams or streams[0].get("codec_name") != "h264":
        return None
    dump = str(streams[0].get("extradata") or "")
    data = bytes.fromhex("".join(m.group(1).replace(" ", "") for m in _HEX_LINE.finditer(dump)))
    return profile_from_extradata(data)


def profile_from_extradata(data: bytes) -> str | None:
    """profile_idc, constraint flags and level_idc, from an avcC box or Annex B SPS, as hex."""
    if len(data) >= 4 and data[0] == 1:  # avcC: version 1, then exactly these three bytes
        return data[1:4].hex()
    for start in (m.end() for m in re.finditer(b"\x00\x00\x01", data)):
        if start < len(data) and data[start] & 0x1F == 7 and len(data) >= start + 4:  # NAL type 7: SPS
            return data[start + 1:start + 4].hex()
    return None


async def probe_profile(ffmpeg: str, stream: StreamConfig, *, timeout: float = PROBE_TIMEOUT) -> str | None:
    """The stream's profile-level-id, or None (no URL, not H.264, unreachable, too slow)."""
    if stream.command is not None or not stream.url:
        return None  # a verbatim command's input is the operator's: not ours to open twice
    out = await run_ffprobe(probe_argv(ffprobe_for(ffmpeg), stream), timeout)
    return None if out is None else profile_from_probe(out)


async def run_ffprobe(argv: list[str], timeout: float) -> bytes | None:
    """ffprobe's standard output, or None when it cannot start, fails, takes over ``timeout`` s or
    writes more than PROBE_OUTPUT bytes.

    A :class:`~agent.supervise.process.Child` like FFmpeg's, watched by its pidfd on the loop:
    asyncio's subprocesses (3.11) start a ``waitpid`` thread per child, and a thread per probe
    (one per spawn) fragments glibc's malloc arenas like any short-lived thread (agent/blocking.py).
    """
    out = bytearray()

    def keep(data: bytes) -> None:
        if len(out) <= PROBE_OUTPUT:
            out.extend(data)
    try:
        child = await Child.spawn(argv, on_stdout=keep, on_stderr=_ignore)
    except OSError:
        return None
    try:
        async with asyncio.timeout(timeout):
            code = await child.wait()
    except TimeoutError:
        return None
    finally:  # timed out or cancelled (the agent stops): no ffprobe outlives the call
        if child.returncode is None:
            child.kill()
            await asyncio.shield(child.wait())
    return bytes(out) if code == 0 and len(out) <= PROBE_OUTPUT else None


def _ignore(line: str) -> None:
    """ffprobe's stderr (``-v error``): its exit status says whether it failed."""


#: ffprobes at once: each opens an RTSP session to a camera (some allow only a few).
PROBE_CONCURRENCY = 4
#: Seconds an RTSP camera has to answer OPTIONS before it is probed (it answers in milliseconds).
ANSWER_TIMEOUT = 2.0


async def rtsp_answers(url: str, timeout: float = ANSWER_TIMEOUT) -> bool:
    """False when an ``rtsp://`` camera does not answer OPTIONS within ``timeout`` (refused, dropped,
    or a connection that never says a word); True for one that does, and for any other input.

    Checked before a probe takes one of the PROBE_CONCURRENCY slots: a camera
    that black-holes would hold its slot for the whole PROBE_TIMEOUT, and the
    producers of every stream queued behind it wait, past the 10 s a stream
    waits for its producer (2 spawns at start, RTP 12 s late behind 8 of them).
    """
    parts = urlsplit(url)
    if parts.scheme != "rtsp" or not parts.hostname:
        return True
    try:
        port = parts.port or 554
    except ValueError:
        return True  # ffprobe says what is wrong with it
    bare = parts._replace(netloc=f"[{parts.hostname}]:{port}" if ":" in parts.hostname
                          else f"{parts.hostname}:{port}").geturl()  # no credentials on the wire twice
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, port)
            writer.write(f"OPTIONS {bare} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
            return (await reader.readline()).startswith(b"RTSP/")
    except (OSError, TimeoutError, UnicodeError):
        return False
    finally:
        if writer is not None:
            writer.close()


class ProfileCache:
    """Each stream's probed profile, by its input (a new URL probes again); failures are not kept."""

    def __init__(self, ffmpeg: Callable[[], str], *, timeout: float = PROBE_TIMEOUT) -> None:
        self._ffmpeg, self.timeout = ffmpeg, timeout
        self._known: dict[str, tuple[tuple[object, ...], str, float]] = {}
        self._slots = asyncio.Semaphore(PROBE_CONCURRENCY)

    async def get(self, stream: StreamConfig, *, max_age: float | None = None) -> str | None:
        """The profile-level-id of ``stream``'s source: probed, unless known for this input
        (and, with ``max_age``, probed no longer than that many seconds ago)."""
        key = (stream.url, stream.rtsp_transport, tuple(stream.input_args), stream.command)
        known = self._known.get(stream.id)
        if known is not None and known[0] == key and (max_age is None or time.monotonic() - known[2] < max_age):
            return known[1]
        if not await rtsp_answers(stream.url or "", min(self.timeout, ANSWER_TIMEOUT)):
            return None  # without taking a slot from the cameras that answer
        async with self._slots:
            profile = await probe_profile(self._ffmpeg(), stream, timeout=self.timeout)
        if profile is not None:
            self._known[stream.id] = (key, profile, time.monotonic())
        return profile
