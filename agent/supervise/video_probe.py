"""A stream's codec and resolution, probed once per spawn from what the camera really sends.

Never parsed from the URL: ffprobe reads the first segment this FFmpeg run wrote (no
second RTSP session to the camera), or, for a stream that does not record, the camera's
input.  A verbatim ``command:`` names its own segments and input: not probed (null).
Bounded: the first segment is waited for at most FIRST_SEGMENT_WAIT past three segment
durations (each look on an ``agent.blocking`` thread: a folder on a hung mount must not hold
the event loop), at most PROBE_CONCURRENCY ffprobes run at once (500 streams starting must not
start 500 of them), each runs at most PROBE_TIMEOUT and is killed with its session when
the call is cancelled (the process exits or the stream stops).  An ffprobe that fails or
times out (a camera slow to open a second session, a loaded host) is run again after each of
RETRY_AFTER, while the run lives; after the last, codec and resolution stay unknown (null) for
this run, and the log says so once.  A probe that answers without a video stream is not retried.
"""
from __future__ import annotations

import asyncio
import json
import logging
import weakref
from pathlib import Path
from typing import Any

from agent.blocking import in_thread
from agent.config.model import StreamConfig
from agent.supervise.ffmpeg import Launch, input_args
from agent.supervise.h264_probe import PROBE_TIMEOUT, ffprobe_for, run_ffprobe

log = logging.getLogger("vas.stream")

#: Seconds past a few segment durations to wait for this run's first segment.
FIRST_SEGMENT_WAIT = 30.0
#: Seconds before each new try of a probe that failed or timed out: one failure (a camera slow to
#: answer a second session, a loaded host) must not leave a run's codec unknown for its whole life.
RETRY_AFTER = (5.0, 15.0, 45.0)
#: ffprobes at once, per event loop (each costs ~0.1 s of CPU, nearly all of it FFmpeg's start).
PROBE_CONCURRENCY = 2
_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
_ENTRIES = ["-select_streams", "v:0", "-show_entries", "stream=codec_name,width,height", "-of", "json"]


def video_from_probe(output: bytes | str) -> dict[str, Any] | None:
    """``{"codec", "width", "height"}`` of the first video stream in ffprobe's JSON, or None."""
    try:
        streams = json.loads(output).get("streams") or []
        first = streams[0]
        codec, width, height = first.get("codec_name"), first.get("width"), first.get("height")
    except (ValueError, AttributeError, IndexError, TypeError):
        return None
    if not isinstance(codec, str) or not codec:
        return None
    size_ok = all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65535 for v in (width, height))
    return {"codec": codec[:32], "width": width if size_ok else None, "height": height if size_ok else None}


def file_argv(ffprobe: str, path: Path) -> list[str]:
    """ffprobe's argv for one recorded segment."""
    return [ffprobe, "-v", "error", *_ENTRIES, str(path)]


def camera_argv(ffprobe: str, stream: StreamConfig) -> list[str]:
    """ffprobe's argv for the camera itself (with the stream's own input options)."""
    return [ffprobe, "-v", "error", *input_args(stream), *_ENTRIES]


def first_segment(launch: Launch) -> Path:
    """The first segment this run writes (``%06d`` is 0): complete once it has its name (temp_file)."""
    return Path(launch.segment_pattern % 0)


def _slots() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    if loop not in _SLOTS:
        _SLOTS[loop] = asyncio.Semaphore(PROBE_CONCURRENCY)
    return _SLOTS[loop]


async def run_probe(argv: list[str], what: str, timeout: float = PROBE_TIMEOUT) -> dict[str, Any] | None:
    """The video ffprobe finds (each try waits for a slot), or None: no video stream, or every try
    failed or timed out (``what`` names the stream in the log line that says so)."""
    for again in (*RETRY_AFTER, None):
        async with _slots():
            out = await run_ffprobe(argv, timeout)
        if out is not None:
            return video_from_probe(out)
        if again is None:
            break
        await asyncio.sleep(again)
    log.warning("%s: codec and resolution unknown: ffprobe failed or timed out %d times (%.0f s each); "
                "they are probed again at the next restart", what, len(RETRY_AFTER) + 1, timeout)
    return None


async def probe_spawn(ffmpeg: str, stream: StreamConfig, launch: Launch) -> dict[str, Any] | None:
    """The video of one run: its first segment when it records, else the camera (a URL only)."""
    if stream.command is not None or not stream.url:
        return None  # a verbatim command's input and segment names are the operator's
    ffprobe = ffprobe_for(ffmpeg)
    if not stream.recording.enabled:
        return await run_probe(camera_argv(ffprobe, stream), stream.id)
    path, every = first_segment(launch), max(0.5, stream.recording.segment_duration / 2)
    waited, limit = 0.0, FIRST_SEGMENT_WAIT + 3 * stream.recording.segment_duration
    while not await _written(path):  # one stat per half segment: cheap at 500 streams
        if waited >= limit:
            return None
        await asyncio.sleep(every)
        waited += every
    return await run_probe(file_argv(ffprobe, path), stream.id)


async def _written(path: Path) -> bool:
    """Whether ``path`` is a file, looked at on a thread: a stat on the loop stopped the whole agent
    when the folder's mount hung.  A look that does not answer within PROBE_TIMEOUT (or one still
    stuck: its key) is a no."""
    try:
        return await in_thread(path.is_file, timeout=PROBE_TIMEOUT, name=f"first-segment:{path}",
                               key=f"first-segment:{path}")
    except TimeoutError:
        return False
