"""snapshot.jpg reads what one frame needs, not the whole segment (issue 20, hostile review).
A real agent indexes a 26 MB MPEG-TS segment made by FFmpeg (a high-bitrate camera, long
segments); the real exporter decodes its frame with real FFmpeg.  It read all of it for one
keyframe at its start: a grid of such cameras cost the disk a segment per tile per poll."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from exporter.snapshots import MAX_INPUT

from .harness import wait_for
from .test_console_api import Exporter, archive_node, archive_stream, http

pytestmark = pytest.mark.integration


def read_bytes(pid: int) -> int:
    """Bytes the process (and its reaped children) read with read() and friends (/proc/PID/io rchar)."""
    with open(f"/proc/{pid}/io") as fh:
        return int(next(line for line in fh if line.startswith("rchar:")).split()[1])


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("snapio")
    agent, port = archive_node(tmp, {"big": archive_stream("10s")})
    agent.start()
    exporter = None
    try:
        segment = tmp / "big_20261128T100000000Z_000000.ts"  # 10 s at ~20 Mbit/s of noise: ~26 MB
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                        "-vf", "noise=alls=60:allf=t", "-t", "10", "-c:v", "libx264", "-preset", "ultrafast",
                        "-g", "250", "-b:v", "20M", "-f", "mpegts", str(segment)], check=True, timeout=120)
        assert segment.stat().st_size > 2 * MAX_INPUT
        (agent.recordings / "big").mkdir(parents=True, exist_ok=True)
        os.utime(segment, (time.time() - 15,) * 2)
        os.rename(segment, agent.recordings / "big" / segment.name)
        token = agent.vasctl("token", "add", "t-viewer", "--scope", "viewer").stdout.split()[-1]
        exporter = Exporter(agent, port)
        yield agent, exporter, token
    finally:
        try:
            if exporter is not None:
                exporter.stop()
        finally:
            agent.stop()


def test_a_snapshot_of_a_big_segment_reads_only_its_start(node):
    agent, exporter, token = node
    first = agent.recordings / "big" / "big_20261128T100000000Z_000000.ts"
    wait_for(lambda: http(exporter.port, "/v2/streams/big/snapshot.jpg", token)[0] == 200, 30, "a first snapshot")
    second = first.with_name("big_20261128T100000000Z_000001.ts")  # the newest now: decoded afresh
    subprocess.run(["cp", "--preserve=timestamps", str(first), str(first.parent / ".new")], check=True)
    os.utime(first.parent / ".new", (time.time() - 5,) * 2)
    os.rename(first.parent / ".new", second)
    size = second.stat().st_size
    time.sleep(3.5)  # the cached frame expires; the index has the new segment by then

    before = read_bytes(exporter.proc.pid)
    status, headers, body = http(exporter.port, "/v2/streams/big/snapshot.jpg", token)
    read = read_bytes(exporter.proc.pid) - before
    assert status == 200 and body.startswith(b"\xff\xd8") and headers["X-Vas-Snapshot"] == "decoded"
    # rchar also counts what the reaped FFmpeg read of its stdin: at most as much again
    assert read < 2 * MAX_INPUT + (1 << 20) < size, f"read {read / 2**20:.1f} MiB for a {size / 2**20:.1f} MiB segment"
