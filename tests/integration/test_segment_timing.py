"""Segments dated by their media, not by when a starved FFmpeg got to write them: a real
camera, the product's HLS output, a real FFmpeg stopped (SIGSTOP) and let go, and the
watcher reading FFmpeg's playlist as it renames each new one into place."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from agent.config.model import RecordingConfig, StreamConfig
from agent.recordings import query
from agent.recordings.index import SegmentIndex
from agent.recordings.watch import Watch
from agent.supervise.ffmpeg import Launch, hls_output

from .harness import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SEG = 1.0


def test_segments_written_in_a_burst_keep_their_media_times(rtsp_camera, tmp_path):
    root = tmp_path / "rec"
    (root / "cam").mkdir(parents=True)
    index = SegmentIndex(root)
    watch = Watch(root, index)
    watch.start()
    stream = StreamConfig(id="cam", url=rtsp_camera.url("cam1"), recording=RecordingConfig(segment_duration=SEG))
    launch = Launch(recording_dir=root / "cam", start_stamp="20261128T120000000Z")
    ffmpeg = subprocess.Popen(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-rtsp_transport", "tcp",
                               "-i", stream.url or "", *hls_output(stream, launch)], stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: index.stats("cam")[0] >= 3, 30, "three segments")
        ffmpeg.send_signal(signal.SIGSTOP)  # starved: the camera's packets wait in the socket
        time.sleep(4 * SEG)
        ffmpeg.send_signal(signal.SIGCONT)  # then written in one burst
        wait_for(lambda: index.stats("cam")[0] >= 12, 60, "twelve segments")
    finally:
        ffmpeg.terminate()
        ffmpeg.wait(10)
        watch.stop()
    names = sorted(p.name for p in (root / "cam").glob("*.ts"))
    mtimes = [os.stat(root / "cam" / n).st_mtime for n in names]
    burst = max(range(1, len(mtimes)), key=lambda i: mtimes[i] - mtimes[i - 1])
    assert mtimes[burst] - mtimes[burst - 1] > 2.5 * SEG, "the stop made no burst (nothing to test)"
    found, _ = query.segments_between(index, "cam", mtimes[0] - 60, mtimes[-1] + 60, SEG)
    assert [s[0] for s in found] == names
    timed = [index.timing.span("cam", "", n) for n in names]
    assert all(t is not None for t in timed), "a segment the playlist named has no timing"
    for prev, seg in zip(found, found[1:]):  # back to back in media time, each about SEG long
        assert abs(prev[1] + prev[2] - seg[1]) < 0.05, (prev, seg)
    assert all(0.5 * SEG <= s[2] <= 2.5 * SEG for s in found[:-1]), [s[2] for s in found]
