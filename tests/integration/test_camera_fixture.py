"""The real RTSP camera fixture works with real ffmpeg (no mocks).

These tests double as executable documentation of the fixture: start a camera, pull it
with ffmpeg into HLS, restart it on the same port, and check RTSP basic auth.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from camera.fixture import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FFMPEG_TIMEOUT = 30  # seconds; a healthy 3 s pull finishes in ~4 s


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])


def ffmpeg_cmd(ffmpeg_bin: str, url: str, *output: str, seconds: float = 3) -> list[str]:
    return [ffmpeg_bin, "-hide_banner", "-nostdin", "-loglevel", "info",
            "-rtsp_transport", "tcp", "-timeout", "5000000",  # 5 s socket I/O timeout
            "-i", url, "-t", str(seconds), "-c", "copy", *output]


def pull_hls(ffmpeg_bin: str, url: str, outdir: Path, seconds: float = 3):
    outdir.mkdir(parents=True, exist_ok=True)
    cmd = ffmpeg_cmd(ffmpeg_bin, url, "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
                     "-hls_segment_filename", str(outdir / "seg_%03d.ts"),
                     str(outdir / "index.m3u8"), seconds=seconds)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT)


def assert_h264_hls(result: subprocess.CompletedProcess, outdir: Path, ffmpeg_bin: str) -> None:
    assert result.returncode == 0, f"ffmpeg failed ({result.returncode}):\n{_tail(result.stderr)}"
    segments = sorted(outdir.glob("*.ts"))
    assert segments, f"no .ts segment in {outdir}:\n{_tail(result.stderr)}"
    assert (outdir / "index.m3u8").is_file()
    assert "Video: h264" in result.stderr, _tail(result.stderr)  # what ffmpeg saw on input
    assert video_codec(segments[0], ffmpeg_bin) == "h264"


def video_codec(media: Path, ffmpeg_bin: str) -> str:
    """Codec of the first video stream of a file, via ffprobe or (fallback) ffmpeg -i."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe:
        out = subprocess.run(
            [ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
             "stream=codec_name", "-of", "default=nw=1:nk=1", str(media)],
            capture_output=True, text=True, timeout=15, check=True)
        return out.stdout.split()[0]  # MPEG-TS lists the stream twice (program + streams)
    out = subprocess.run([ffmpeg_bin, "-hide_banner", "-nostdin", "-i", str(media)],
                         capture_output=True, text=True, timeout=15)
    return "h264" if "Video: h264" in out.stderr else out.stderr


def time_wait_on(port: int) -> int:
    """Number of TCP sockets on 127.0.0.1:<port> currently in TIME_WAIT."""
    local = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "06":  # 06 = TCP_TIME_WAIT
            count += 1
    return count


def test_ffmpeg_pulls_h264_into_hls(rtsp_camera, ffmpeg_bin, tmp_path):
    assert rtsp_camera.running and rtsp_camera.paths == ["cam1", "cam2", "cam3", "cam4"]
    assert rtsp_camera.url("cam1") == f"rtsp://127.0.0.1:{rtsp_camera.port}/cam1"

    result = pull_hls(ffmpeg_bin, rtsp_camera.url("cam1"), tmp_path / "hls")

    assert_h264_hls(result, tmp_path / "hls", ffmpeg_bin)


def test_all_paths_served_and_shared_between_clients(rtsp_camera, ffmpeg_bin):
    def reader(path, seconds):
        return subprocess.Popen(
            ffmpeg_cmd(ffmpeg_bin, rtsp_camera.url(path), "-f", "null", "-", seconds=seconds),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    # One reader streaming cam1 while more readers join it (shared pipeline) and
    # every other path, all concurrently.
    procs = [("cam1 (first)", reader("cam1", 4))]
    try:
        time.sleep(1.5)
        procs += [(p, reader(p, 2)) for p in ("cam1", "cam2", "cam3", "cam4")]
        results = [(name, p.communicate(timeout=FFMPEG_TIMEOUT)[1], p.returncode)
                   for name, p in procs]
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
    for name, stderr, rc in results:
        assert rc == 0 and "Video: h264" in stderr, f"{name} rc={rc}:\n{_tail(stderr)}"
        # A client joining a shared path must not disturb the ones already reading
        # (GStreamer would seek the shared pipeline back to 0 on each PLAY).
        assert "non monotonically increasing dts" not in stderr, f"{name}:\n{_tail(stderr)}"


def test_restart_on_same_port_then_pull_again(rtsp_camera, ffmpeg_bin, tmp_path):
    port = rtsp_camera.port
    assert_h264_hls(pull_hls(ffmpeg_bin, rtsp_camera.url("cam2"), tmp_path / "before"),
                    tmp_path / "before", ffmpeg_bin)

    # Keep a client connected across the restart, like an agent's ffmpeg would be.
    reader = subprocess.Popen(
        ffmpeg_cmd(ffmpeg_bin, rtsp_camera.url("cam2"), "-f", "null", "-", seconds=60),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)  # let it get past DESCRIBE/PLAY and receive frames
        assert reader.poll() is None, _tail(reader.communicate(timeout=5)[1])
        old_pid = rtsp_camera.proc.pid
        rtsp_camera.stop()
        rtsp_camera.start()
        # The old connection died with the old server (the kernel resets it), so
        # ffmpeg stops at once -- note: with exit code 0, it treats that as EOF.
        reader.communicate(timeout=FFMPEG_TIMEOUT)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait(timeout=5)

    assert rtsp_camera.running and rtsp_camera.port == port
    assert rtsp_camera.proc.pid != old_pid and rtsp_camera.starts == 2
    assert_h264_hls(pull_hls(ffmpeg_bin, rtsp_camera.url("cam2"), tmp_path / "after"),
                    tmp_path / "after", ffmpeg_bin)

    rtsp_camera.restart()  # restart() is stop()+start(), same port again
    assert rtsp_camera.port == port and rtsp_camera.starts == 3
    assert_h264_hls(pull_hls(ffmpeg_bin, rtsp_camera.url("cam2"), tmp_path / "again", 2),
                    tmp_path / "again", ffmpeg_bin)


def make_time_wait(port: int) -> None:
    """Leave a connection on 127.0.0.1:<port> in TIME_WAIT (server side closes first)."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        server, _ = listener.accept()
        server.close()  # active close -> this end goes to TIME_WAIT (60 s on Linux)
        client.recv(1)  # wait for the FIN
        client.close()


def test_camera_binds_a_port_left_in_time_wait(camera_factory, ffmpeg_bin, tmp_path):
    # A real camera killed while clients are connected usually resets them (no
    # TIME_WAIT), but a graceful close leaves the port in TIME_WAIT for 60 s;
    # restart() must cope. Without SO_REUSEADDR the bind below would fail for 60 s,
    # longer than start() retries, so this proves GStreamer's listener sets it.
    port = free_port()
    make_time_wait(port)
    assert time_wait_on(port) >= 1
    with socket.socket() as plain:  # control: a bind without SO_REUSEADDR fails
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))

    started = time.monotonic()
    cam = camera_factory(["cam1"], port)
    assert time.monotonic() - started < 5, "start() had to wait for the port"
    assert time_wait_on(port) >= 1  # still there: the camera bound alongside it
    assert_h264_hls(pull_hls(ffmpeg_bin, cam.url("cam1"), tmp_path / "hls"),
                    tmp_path / "hls", ffmpeg_bin)


def test_basic_auth_requires_the_right_password(camera_factory, ffmpeg_bin, tmp_path):
    user, password = "admin", "p@ss:w/rd 1"  # URL-special characters on purpose
    cam = camera_factory(["secure"], user=user, password=password)
    assert cam.url("secure", user, password) == (
        f"rtsp://admin:p%40ss%3Aw%2Frd%201@127.0.0.1:{cam.port}/secure")

    for label, url in [("no credentials", cam.url("secure")),
                       ("wrong password", cam.url("secure", user, "wrong")),
                       ("wrong user", cam.url("secure", "root", password))]:
        result = pull_hls(ffmpeg_bin, url, tmp_path / label.replace(" ", "_"), seconds=1)
        assert result.returncode != 0, f"{label}: ffmpeg unexpectedly succeeded"
        assert "401 Unauthorized" in result.stderr, f"{label}:\n{_tail(result.stderr)}"
        assert not list((tmp_path / label.replace(" ", "_")).glob("*.ts"))

    good = tmp_path / "good"
    assert_h264_hls(pull_hls(ffmpeg_bin, cam.url("secure", user, password), good), good,
                    ffmpeg_bin)


def test_two_runs_at_once_hand_out_ports_from_different_blocks():
    """Two test processes with the same xdist worker name (two suites at once) never share a block:
    each holds its block's lock while it lives."""
    hold = ("import sys; from camera.fixture import free_port, PORT_BLOCK; "
            "print(free_port() // PORT_BLOCK, flush=True); sys.stdin.read()")
    tests_dir = str(Path(__file__).resolve().parents[1])
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": tests_dir, "PYTEST_XDIST_WORKER": "gw3"}
    procs = [subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    try:
        blocks = [int(p.stdout.readline()) for p in procs]  # type: ignore[union-attr]
    finally:
        for p in procs:
            p.communicate("", timeout=10)
    assert blocks[0] != blocks[1], blocks
