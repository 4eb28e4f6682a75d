"""Clients that stop reading a clip (issue 20, hostile review), against a real agent, its index
of a real FFmpeg-made archive and the real exporter.  Two clips export at once; a client that
stops reading but keeps its connection (a laptop shut mid-download, a stuck player) held its
slot, its FFmpeg and its descriptors forever: after two of them every clip was 503."""
from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from exporter.media import WRITE_STALL

from .harness import wait_for
from .test_console_api import ARCHIVE_START, archive_end, archive_running, archive_stream, http, make_archive

#: One worker runs this module's tests, so its module-scoped node is built once, not once per worker.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("console_slow_client")]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow")

    def fill(agent) -> None:
        (agent.recordings / "archive").mkdir(parents=True, exist_ok=True)
        make_archive(agent.recordings / "archive", tmp / "scratch")

    # stuck_ok: handlers stuck (the defect this file is about) must not leave an exporter behind.
    with archive_running(tmp, {"archive": archive_stream("2s")}, fill, stuck_ok=True) as (_, exporter, token):
        yield exporter, token


def stuck_client(port: int, path: str, token: str) -> socket.socket:
    """A client that asks for a clip, reads its status line, then reads nothing more."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    return sock


def test_clients_that_stop_reading_do_not_hold_the_clip_slots(node, tmp_path):
    exporter, token = node
    path = f"/v2/recordings/archive/clip.mp4?start={ARCHIVE_START:.0f}&end={archive_end(19):.0f}"  # ~10 MB
    stuck = [stuck_client(exporter.port, path, token) for _ in range(2)]
    try:
        wait_for(lambda: len(exporter.ffmpeg_children()) == 2, 15, "both clips' FFmpeg")
        status, _, body = http(exporter.port, path, token)
        assert status == 503, body[:200]  # both slots taken: the cap itself holds
        began = time.monotonic()
        wait_for(lambda: not exporter.ffmpeg_children(), WRITE_STALL + 20, "the stuck clips' FFmpeg to be killed")
        assert time.monotonic() - began < WRITE_STALL + 20
        status, headers, body = http(exporter.port, path, token)
        assert status == 200 and headers["Content-Type"] == "video/mp4", body[:300]
        clip = tmp_path / "clip.mp4"
        clip.write_bytes(body)
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=format_name,duration", "-of",
                                "default=nw=1", str(clip)], capture_output=True, text=True, timeout=30)
        assert "mp4" in probe.stdout and float(probe.stdout.split("duration=")[1].split()[0]) > 30, probe
    finally:
        for sock in stuck:
            sock.close()


def test_clients_that_leave_mid_clip_give_their_slots_back(node, tmp_path):
    """The clip's FFmpeg was killed when its client left, but the handler then waited forever for
    asyncio to reap it (its stdout pipe, paused with output unread, never closed): after two such
    clients every clip was 503 for good, with both clips' descriptors still open."""
    exporter, token = node
    path = f"/v2/recordings/archive/clip.mp4?start={ARCHIVE_START:.0f}&end={archive_end(19):.0f}"
    fds_before = len(os.listdir(f"/proc/{exporter.proc.pid}/fd"))
    for _ in range(3):  # one more than the slots
        sock = stuck_client(exporter.port, path, token)
        wait_for(lambda: exporter.ffmpeg_children(), 15, "the clip's FFmpeg")
        time.sleep(0.5)  # FFmpeg fills the pipe and the socket: the exporter stops reading it
        # FFmpeg holds the segments; the exporter keeps the client's socket and FFmpeg's pipes, not a
        # descriptor per segment for as long as the clip runs (a run seen with 22 still open after).
        assert len(os.listdir(f"/proc/{exporter.proc.pid}/fd")) <= fds_before + 4
        sock.close()
        wait_for(lambda: not exporter.ffmpeg_children(), 15, "the clip's FFmpeg to be gone")
    status, headers, body = http(exporter.port, path, token)
    assert status == 200 and headers["Content-Type"] == "video/mp4", body[:300]
    assert len(os.listdir(f"/proc/{exporter.proc.pid}/fd")) <= fds_before + 2  # the segments' descriptors closed
