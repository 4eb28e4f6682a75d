"""One ffprobe run (agent/supervise/h264_probe.py run_ffprobe): a real ffprobe, a real clip, no thread.

A probe runs once per spawn.  Through asyncio's subprocesses (3.11) each started a ``waitpid``
thread, and short-lived threads grow the agent's RSS (agent/blocking.py).
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import threading

import pytest

from agent.supervise import h264_probe
from agent.supervise.h264_probe import run_ffprobe
from agent.supervise.video_probe import file_argv, video_from_probe

from .harness import children


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=0.5",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True, timeout=60)
    return path


@pytest.fixture
def thread_starts(monkeypatch):
    """The names of the threads started while the test runs."""
    started: list[str] = []
    start = threading.Thread.start

    def counting(self: threading.Thread) -> None:
        started.append(self.name)
        start(self)
    monkeypatch.setattr(threading.Thread, "start", counting)
    return started


@pytest.fixture
def leftovers():
    """The processes started under this test process during the test that still live (not zombies)."""
    before = {p.pid for p in children(os.getpid(), recursive=True)}

    def living() -> list[int]:
        return [p.pid for p in children(os.getpid(), recursive=True) if p.pid not in before]
    return living


async def test_a_probe_reads_the_clip_and_starts_no_thread(clip, thread_starts, leftovers):
    outs = [await run_ffprobe(file_argv("ffprobe", clip), 20.0) for _ in range(3)]
    assert all(out is not None and video_from_probe(out) == {"codec": "h264", "width": 160, "height": 120}
               for out in outs)
    assert thread_starts == [] and leftovers() == []


async def test_a_failing_probe_is_none():
    assert await run_ffprobe(["ffprobe", "-v", "error", "/nonexistent/clip.mp4"], 20.0) is None
    assert await run_ffprobe(["/nonexistent/ffprobe"], 20.0) is None


async def test_a_probe_past_its_timeout_is_killed_with_its_group(leftovers):
    assert await run_ffprobe(["sh", "-c", "sleep 60 & sleep 60"], 0.3) is None
    assert leftovers() == []


async def test_a_cancelled_probe_leaves_no_process(leftovers):
    task = asyncio.ensure_future(run_ffprobe(["sleep", "60"], 30.0))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers() == []


async def test_an_answer_past_its_bound_is_none(monkeypatch):
    monkeypatch.setattr(h264_probe, "PROBE_OUTPUT", 4096)
    assert await run_ffprobe(["head", "-c", "4096", "/dev/zero"], 20.0) == bytes(4096)
    assert await run_ffprobe(["head", "-c", "1000000", "/dev/zero"], 20.0) is None
