"""One ffprobe run (agent/supervise/h264_probe.py run_ffprobe): a real ffprobe, a real clip, no thread;
a spawn's probe (agent/supervise/video_probe.py) tried again when ffprobe fails, against the real camera.

A probe runs once per spawn.  Through asyncio's subprocesses (3.11) each started a ``waitpid``
thread, and short-lived threads grow the agent's RSS (agent/blocking.py).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from agent.config.model import RecordingConfig, StreamConfig
from agent.supervise import h264_probe, video_probe
from agent.supervise.ffmpeg import Launch
from agent.supervise.h264_probe import run_ffprobe
from agent.supervise.video_probe import file_argv, probe_spawn, video_from_probe

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


def _ffprobe_failing(tmp_path, fails: int, answer: str | None = None):
    """An ``ffmpeg`` whose sibling ``ffprobe`` (the one a spawn's probe runs) fails its first ``fails``
    runs (a camera slow to open a second session), then is the real one, or prints ``answer``; the
    runs are counted in the returned file."""
    bin_dir, runs = tmp_path / "bin", tmp_path / "ffprobe-runs"
    bin_dir.mkdir()
    (bin_dir / "ffmpeg").symlink_to(shutil.which("ffmpeg"))
    then = f"printf '%s' '{answer}'" if answer is not None else f'exec {shutil.which("ffprobe")} "$@"'
    (bin_dir / "ffprobe").write_text(
        f'#!/bin/sh\necho run >> {runs}\n[ "$(wc -l < {runs})" -le {fails} ] && exit 1\n{then}\n')
    (bin_dir / "ffprobe").chmod(0o755)
    return str(bin_dir / "ffmpeg"), runs


def _live_stream(url: str) -> tuple[StreamConfig, Launch]:
    return StreamConfig(id="cam1", url=url, recording=RecordingConfig(enabled=False)), Launch(Path("/nonexistent"), "x")


@pytest.mark.integration
async def test_a_probe_that_fails_is_tried_again_until_the_camera_answers(rtsp_camera, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(video_probe, "RETRY_AFTER", (0.1, 0.1, 0.1))
    ffmpeg, runs = _ffprobe_failing(tmp_path, fails=2)
    stream, launch = _live_stream(rtsp_camera.url("cam1"))
    assert await probe_spawn(ffmpeg, stream, launch) == {"codec": "h264", "width": 320, "height": 240}
    assert runs.read_text().count("run") == 3
    assert "codec and resolution unknown" not in caplog.text


async def test_a_probe_that_always_fails_is_tried_a_bounded_number_of_times_and_said_once(tmp_path, monkeypatch,
                                                                                           caplog):
    monkeypatch.setattr(video_probe, "RETRY_AFTER", (0.1, 0.1, 0.1))
    ffmpeg, runs = _ffprobe_failing(tmp_path, fails=1000)
    stream, launch = _live_stream("rtsp://127.0.0.1:9/cam1")
    assert await probe_spawn(ffmpeg, stream, launch) is None
    assert runs.read_text().count("run") == 4
    said = [r.getMessage() for r in caplog.records if "codec and resolution unknown" in r.getMessage()]
    assert said == ["cam1: codec and resolution unknown: ffprobe failed or timed out 4 times (5 s each); "
                    "they are probed again at the next restart"]


async def test_a_probe_that_answers_without_video_is_not_tried_again(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(video_probe, "RETRY_AFTER", (0.1, 0.1, 0.1))
    ffmpeg, runs = _ffprobe_failing(tmp_path, fails=0, answer='{"streams": []}')
    stream, launch = _live_stream("rtsp://127.0.0.1:9/cam1")
    assert await probe_spawn(ffmpeg, stream, launch) is None
    assert runs.read_text().count("run") == 1
    assert "codec and resolution unknown" not in caplog.text
