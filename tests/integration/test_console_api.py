"""The console's HTTP routes against real processes (issue 20): the agent with real FFmpeg
recording the RTSP test camera (a password in its URL), the exporter process, its tokens
made by vasctl, FFmpeg and ffprobe.  Besides the live streams, an ``archive`` stream holds
segments FFmpeg made from a test pattern at a higher bitrate, moved into its directory
so the agent's index holds a known timeline: 10 segments of 2 s, a 60 s gap, 10 more.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from camera.fixture import SUITE_FPS, RtspCamera, free_port
from exporter.openapi import spec
from tests.exporter.openapi_check import problems

from .harness import BIN, AgentProcess, children, config, wait_for

#: One worker runs this module's tests, so its module-scoped node is built once, not once per worker.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("console_api")]
PASSWORD = "Zq7-console-secret"
ARCHIVE_START = 1_764_000_000.0  # 2025-11-24T16:00:00Z: the archive's first segment starts here
ARCHIVE_SEG = 2.0
ARCHIVE_GAP = 60.0
SEEN: list[bytes] = []  # every answer's head and body: no password may be in any
node_camera: list = []  # the module's camera's stop(), for the last test
#: Every answer is checked against /v2/openapi.json (tests/exporter/openapi_check.py).
TEMPLATES = [(t, re.compile(re.sub(r"\\{name\\}", ".+", re.sub(r"\\{(?!name)[a-z_]+\\}", "[^/]+", re.escape(t)))))
             for t in sorted(spec()["paths"], key=len, reverse=True)]


def http(port: int, path: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, headers, body = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        status, headers, body = err.code, dict(err.headers), err.read()
    SEEN.append(json.dumps(headers).encode() + body)
    bare = path.split("?")[0]
    template = next((t for t, pattern in TEMPLATES if pattern.fullmatch(bare)), None)
    assert problems("GET", template, status, headers.get("Content-Type", ""), body) == [], path
    return status, headers, body


def archive_end(i: int) -> float:
    """When archive segment ``i`` (0-19) ended: 10 in a row, a gap, 10 more."""
    return ARCHIVE_START + ARCHIVE_SEG * (i + 1) + (ARCHIVE_GAP if i >= 10 else 0.0)


def make_archive(stream_dir: Path, scratch: Path) -> list[str]:
    """Twenty 2 s MPEG-TS segments (640x360, ~2 Mbit/s) moved into the stream's directory."""
    scratch.mkdir()
    pattern = scratch / "archive_20251124T160000000Z_%06d.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-t", "40",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-b:v", "2M", "-f", "hls",
                    "-hls_time", "2", "-hls_list_size", "0", "-hls_segment_filename", str(pattern),
                    str(scratch / "gen.m3u8")], check=True, timeout=120)
    names = sorted(p.name for p in scratch.glob("*.ts"))
    assert len(names) == 20, names
    for i, name in enumerate(names):
        os.utime(scratch / name, (archive_end(i), archive_end(i)))
    for name in names:  # a rename keeps the mtime; the agent's inotify watch indexes it
        os.rename(scratch / name, stream_dir / name)
    return names


def archive_stream(segment_duration: str) -> dict:
    """A disabled stream whose folder holds a planted archive (kept: 400 days of retention)."""
    return {"url": "rtsp://127.0.0.1:9/none", "enabled": False,
            "recording": {"segment_duration": segment_duration, "retention": "400d"}}


def archive_node(tmp: Path, streams: dict[str, dict]) -> tuple[AgentProcess, int]:
    """An agent (not started yet) of ``streams`` in ``tmp/node``, and its exporter's free port."""
    port = free_port()
    cfg = config(streams)
    cfg["exporter"] = {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp / "tokens"), "stale_after": "5s"}
    (tmp / "node").mkdir()
    return AgentProcess(tmp / "node", cfg), port


@contextlib.contextmanager
def archive_running(tmp: Path, streams: dict[str, dict], fill: Callable[[AgentProcess], None], *,
                    stuck_ok: bool = False) -> Iterator[tuple[AgentProcess, Exporter, str]]:
    """:func:`archive_node` started, ``fill(agent)`` run, its exporter up: ``(agent, exporter, viewer token)``.
    At the end an exporter that does not stop on SIGTERM is killed (an error unless ``stuck_ok``:
    a file about stuck handlers), and the agent is stopped."""
    agent, port = archive_node(tmp, streams)
    agent.start()
    exporter = None
    try:
        fill(agent)
        token = agent.vasctl("token", "add", "t-viewer", "--scope", "viewer").stdout.split()[-1]
        exporter = Exporter(agent, port)
        yield agent, exporter, token
    finally:
        try:
            if exporter is not None:
                try:
                    exporter.stop()
                except subprocess.TimeoutExpired:
                    exporter.proc.kill()
                    exporter.proc.wait(10)
                    if not stuck_ok:
                        raise
        finally:
            agent.stop()


class Exporter:
    def __init__(self, agent: AgentProcess, port: int) -> None:
        self.port, self.log = port, agent.workdir / "exporter.log"
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen([str(BIN / "vas-exporter"), "--config", str(agent.config_path)],
                                         stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: http(port, "/livez")[0] == 200, 15, "the exporter")

    def ffmpeg_children(self) -> list[psutil.Process]:
        return children(self.proc.pid, recursive=True, named="ffmpeg")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A camera with a password, an agent recording it (MPEG-TS) and as fMP4 (a verbatim command),
    the archive, an exporter with an 8 MiB clip cap (the archive holds ~10 MB), and a viewer, a read
    and an admin token."""
    tmp = tmp_path_factory.mktemp("console")
    camera = RtspCamera(("cam1",), user="admin", password=PASSWORD, fps=SUITE_FPS).start()
    node_camera[:] = [camera.stop]
    url = camera.url("cam1", user="admin", password=PASSWORD)
    fmp4 = ["ffmpeg", "-nostdin", "-loglevel", "warning", "-rtsp_transport", "tcp", "-i", "{url}", "-map", "0:v:0",
            "-c", "copy", "-f", "hls", "-hls_time", "1", "-hls_list_size", "6", "-hls_segment_type", "fmp4",
            "-hls_flags", "temp_file+independent_segments", "-hls_fmp4_init_filename", "fm_init.mp4",
            "-hls_segment_filename", "{recording_dir}/fm_{stream_id}_%06d.m4s", "-progress", "{progress}",
            "{playlist}"]
    port = free_port()
    archive = {"url": "rtsp://127.0.0.1:9/none", "enabled": False, "recording": {"segment_duration": "2s"}}
    cfg = config({"cam1": {"url": url}, "fm": {"url": url, "command": fmp4}, "archive": archive})
    cfg["exporter"] = {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp / "tokens"), "stale_after": "5s",
                       "clip_max_size": "8MiB"}
    workdir = tmp / "node"
    workdir.mkdir()
    agent = AgentProcess(workdir, cfg).start()
    exporter = None
    try:
        agent.wait_all("live", ["cam1", "fm"], timeout=60)
        (agent.recordings / "archive").mkdir(parents=True, exist_ok=True)
        names = make_archive(agent.recordings / "archive", tmp / "scratch")
        tokens = {scope: agent.vasctl("token", "add", f"t-{scope}", "--scope", scope).stdout.split()[-1]
                  for scope in ("viewer", "read", "admin")}
        exporter = Exporter(agent, port)
        wait_for(lambda: len(agent.segments("cam1")) >= 4, 30, "cam1 segments")
        yield agent, exporter, tokens, names
    finally:
        if exporter is not None:
            exporter.stop()
        agent.stop()
        camera.stop()


@pytest.mark.slow
def test_the_status_shows_codec_and_resolution_probed_from_the_stream(node):
    agent, exporter, tokens, _ = node

    def probed():
        status, _, body = http(exporter.port, "/v2/console/streams")
        streams = {s["id"]: s for s in json.loads(body)["streams"]}
        return status == 200 and streams["cam1"]["codec"] and streams
    streams = wait_for(probed, 30, "cam1's codec in the console status")
    cam1 = streams["cam1"]
    assert (cam1["codec"], cam1["width"], cam1["height"]) == ("h264", 320, 240)
    assert cam1["state"] == "live" and cam1["recording"]["bytes"] > 0 and cam1["uptime_seconds"] >= 0
    assert cam1["owner"] is None and isinstance(cam1["viewers"], int)
    assert streams["archive"]["codec"] is None  # never spawned: unknown, not guessed from the URL


VIDEO = ["/v2/streams/cam1/live.m3u8", "/v2/streams/cam1/snapshot.jpg", "/v2/recordings/cam1/timeline",
         "/v2/recordings/cam1/playlist.m3u8", "/v2/recordings/archive/clip.mp4?start=1764000000&end=1764000010"]


@pytest.mark.slow
@pytest.mark.parametrize("path", VIDEO)
def test_video_needs_a_viewer_or_admin_token(node, path):
    agent, exporter, tokens, _ = node
    status, headers, body = http(exporter.port, path)
    assert status == 401 and "error" in json.loads(body) and headers["WWW-Authenticate"].startswith("Bearer")
    status, _, body = http(exporter.port, path, tokens["read"])
    assert status == 403 and "error" in json.loads(body)
    for scope in ("viewer", "admin"):
        assert http(exporter.port, path, tokens[scope])[0] == 200, scope


def test_the_live_playlist_points_at_segments_the_index_knows(node):
    agent, exporter, tokens, _ = node
    status, headers, body = http(exporter.port, "/v2/streams/cam1/live.m3u8", tokens["viewer"])
    assert status == 200 and headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    uris = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    assert uris and all(u.startswith("/v2/recordings/cam1/segments/cam1_") for u in uris)
    status, headers, data = http(exporter.port, uris[-1], tokens["viewer"])
    assert status == 200 and headers["Content-Type"] == "video/mp2t"
    assert data == (agent.recordings / "cam1" / uris[-1].rsplit("/", 1)[1]).read_bytes()


def test_names_the_index_does_not_know_are_404_even_when_a_file_is_there(node):
    agent, exporter, tokens, _ = node
    cam_dir = agent.recordings / "cam1"
    real = sorted(cam_dir.glob("*.ts"))[0]
    (cam_dir / "evil.ts").symlink_to("/etc/passwd")
    (cam_dir / "alias.ts").symlink_to(real)
    (cam_dir / "notes.txt").write_text("not a segment")
    (agent.recordings / "outside.ts").write_bytes(b"\x47" * 188)
    try:
        time.sleep(1.0)  # the agent's watch has seen them (it skips symlinks and non-segments)
        for name in ("evil.ts", "alias.ts", "notes.txt", "../outside.ts", "..%2Foutside.ts", "%2e%2e/outside.ts",
                     "../../../../etc/passwd", "index.m3u8", "nope_000001.ts"):
            status, _, body = http(exporter.port, f"/v2/recordings/cam1/segments/{name}", tokens["viewer"])
            assert status in (404, 400) and b"root:" not in body, (name, status)
            assert status == 404 or "error" in json.loads(body)
        assert http(exporter.port, "/v2/recordings/nosuch/segments/x.ts", tokens["viewer"])[0] == 404
    finally:
        for name in ("evil.ts", "alias.ts", "notes.txt"):
            (cam_dir / name).unlink()
        (agent.recordings / "outside.ts").unlink()


@pytest.mark.slow
def test_concurrent_snapshots_share_one_ffmpeg_decode(node):
    agent, exporter, tokens, _ = node
    time.sleep(3.5)  # past the cache: the first request below decodes
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: http(exporter.port, "/v2/streams/cam1/snapshot.jpg", tokens["viewer"]),
                                range(8)))
    assert all(a[0] == 200 and a[1]["Content-Type"] == "image/jpeg" and a[2][:2] == b"\xff\xd8" for a in answers)
    how = sorted(a[1]["X-Vas-Snapshot"] for a in answers)
    assert how.count("decoded") == 1, how
    assert answers[0][1]["Cache-Control"] == "private, max-age=2"
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "json",
                            "-"], input=answers[0][2], capture_output=True, check=True)
    assert json.loads(probe.stdout)["streams"][0]["width"] == 320
    status, _, body = http(exporter.port, "/v2/streams/archive/snapshot.jpg", tokens["viewer"])
    assert status == 200 and body[:2] == b"\xff\xd8"  # a stream that is not running still has its last frame


def test_the_timeline_has_the_archives_ranges_and_gap(node):
    agent, exporter, tokens, _ = node
    start, end = ARCHIVE_START - 10, archive_end(19) + 10
    status, _, body = http(exporter.port, f"/v2/recordings/archive/timeline?start={start:.0f}&end={end:.0f}",
                           tokens["viewer"])
    doc = json.loads(body)
    assert status == 200 and doc["stream_id"] == "archive"
    # The first segment after a gap is dated by its end minus the configured duration (2 s).
    assert doc["ranges"] == [[ARCHIVE_START, archive_end(9)], [archive_end(10) - ARCHIVE_SEG, archive_end(19)]]
    assert len(doc["gaps"]) == 3  # before, between, after


def test_the_vod_playlist_has_program_date_time_and_a_discontinuity_at_the_gap(node):
    agent, exporter, tokens, names = node
    iso = "2025-11-24T15:59:00Z"
    status, headers, body = http(exporter.port, f"/v2/recordings/archive/playlist.m3u8?start={iso}&end=1764000200",
                                 tokens["viewer"])
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("application/vnd.apple.mpegurl"), text
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.rstrip().endswith("#EXT-X-ENDLIST")
    assert text.count("#EXT-X-PROGRAM-DATE-TIME:") == 20 and "#EXT-X-PROGRAM-DATE-TIME:2025-11-24T16:00:" in text
    assert text.count("#EXT-X-DISCONTINUITY") == 1
    uris = [line for line in text.splitlines() if line.startswith("/")]
    assert uris == [f"/v2/recordings/archive/segments/{n}" for n in names]
    for query, parameter in (("start=yesterday", "start"), ("start=2025-11-24T15:59:00", "start"),
                             ("start=1764000200&end=1764000100", "end"), ("start=1&start=2", "start"),
                             ("begin=1764000000", "begin")):
        status, _, body = http(exporter.port, f"/v2/recordings/archive/playlist.m3u8?{query}", tokens["viewer"])
        assert status == 400 and json.loads(body)["parameter"] == parameter, query


def test_the_fmp4_playlists_keep_the_init_segment(node):
    agent, exporter, tokens, _ = node
    wait_for(lambda: len(list((agent.recordings / "fm").glob("*.m4s"))) >= 3, 30, "fMP4 segments")
    status, _, body = http(exporter.port, "/v2/streams/fm/live.m3u8", tokens["viewer"])
    assert status == 200 and '#EXT-X-MAP:URI="/v2/recordings/fm/segments/fm_init.mp4"' in body.decode()
    now = time.time()
    status, _, body = http(exporter.port, f"/v2/recordings/fm/playlist.m3u8?start={now - 60:.0f}&end={now:.0f}",
                           tokens["viewer"])
    text = body.decode()
    assert status == 200 and '#EXT-X-MAP:URI="/v2/recordings/fm/segments/fm_init.mp4"' in text
    status, headers, init = http(exporter.port, "/v2/recordings/fm/segments/fm_init.mp4", tokens["viewer"])
    assert status == 200 and headers["Content-Type"] == "video/mp4" and b"ftyp" in init[:16]
    assert headers["Cache-Control"] == "no-store"  # streamed: its headers go out before the frame's return
    seg = next(line for line in text.splitlines() if line.endswith(".m4s"))
    status, headers, _ = http(exporter.port, seg, tokens["viewer"])
    assert status == 200 and headers["Content-Type"] == "video/iso.segment"
    status, _, clip = http(exporter.port, f"/v2/recordings/fm/clip.mp4?start={now - 5:.0f}&end={now - 1:.0f}",
                           tokens["viewer"])
    assert status == 200 and abs(duration_of(clip) - 4) <= 1.5  # 1 s segments (GOP 1 s)


def duration_of(mp4: bytes) -> float:
    """ffprobe's duration of the clip as a downloaded file (from a pipe it sees the first fragment only)."""
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".mp4") as fh:
        fh.write(mp4)
        fh.flush()
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name",
                                "-of", "json", fh.name], capture_output=True, check=True)
    doc = json.loads(probe.stdout)
    assert doc["streams"][0]["codec_name"] == "h264"
    return float(doc["format"]["duration"])


def test_a_clip_is_a_valid_mp4_of_the_range_within_one_segment(node):
    agent, exporter, tokens, _ = node
    start, end = ARCHIVE_START + 3, ARCHIVE_START + 13  # 10 s in the first run
    status, headers, clip = http(exporter.port, f"/v2/recordings/archive/clip.mp4?start={start:.0f}&end={end:.0f}",
                                 tokens["viewer"])
    assert status == 200 and headers["Content-Type"] == "video/mp4"
    assert headers["Content-Disposition"] == 'attachment; filename="archive_20251124T160003Z.mp4"'
    assert headers["Cache-Control"] == "no-store"  # streamed: its headers go out before the frame's return
    assert abs(duration_of(clip) - (end - start)) <= ARCHIVE_SEG
    across = f"start={archive_end(7):.0f}&end={archive_end(12):.0f}"  # over the gap: 2 + 2 segments
    status, _, clip = http(exporter.port, f"/v2/recordings/archive/clip.mp4?{across}", tokens["viewer"])
    assert status == 200 and abs(duration_of(clip) - 4 * ARCHIVE_SEG) <= ARCHIVE_SEG


def test_a_clip_past_the_size_cap_is_413_before_any_video(node):
    agent, exporter, tokens, _ = node
    status, headers, body = http(exporter.port, f"/v2/recordings/archive/clip.mp4?start={ARCHIVE_START:.0f}"
                                 f"&end={archive_end(19):.0f}", tokens["viewer"])
    assert status == 413 and headers["Content-Type"].startswith("application/json")
    assert "exporter.clip_max_size" in json.loads(body)["error"]


def test_the_clips_ffmpeg_is_killed_when_the_client_goes_away(node):
    agent, exporter, tokens, _ = node
    path = f"/v2/recordings/archive/clip.mp4?start={ARCHIVE_START:.0f}&end={archive_end(13):.0f}"  # ~7 MB
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow client: FFmpeg waits on it
    sock.settimeout(10)
    sock.connect(("127.0.0.1", exporter.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tokens['viewer']}\r\n\r\n".encode())
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    wait_for(lambda: exporter.ffmpeg_children(), 10, "the clip's FFmpeg")
    sock.close()
    wait_for(lambda: not exporter.ffmpeg_children(), 10, "the clip's FFmpeg to be gone")


def test_a_head_of_a_clip_runs_no_export(node):
    agent, exporter, tokens, _ = node
    req = urllib.request.Request(f"http://127.0.0.1:{exporter.port}/v2/recordings/archive/clip.mp4?"
                                 f"start={ARCHIVE_START:.0f}&end={archive_end(9):.0f}", method="HEAD",
                                 headers={"Authorization": f"Bearer {tokens['viewer']}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "video/mp4"
    assert exporter.ffmpeg_children() == []


def test_no_answer_carries_the_cameras_password(node):
    agent, exporter, tokens, _ = node
    http(exporter.port, "/v2/console/streams")
    assert SEEN and not [a for a in SEEN if PASSWORD.encode() in a]
    assert PASSWORD not in exporter.log.read_text(errors="replace")


def test_the_page_and_its_files_carry_a_strict_csp(node):
    agent, exporter, tokens, _ = node
    status, headers, body = http(exporter.port, "/console/nosuch.js")
    assert status == 404 and "default-src 'self'" in headers["Content-Security-Policy"]
    assert re.search(r"script-src 'self';", headers["Content-Security-Policy"])


def test_a_stopped_camera_shows_error_and_its_redacted_last_error_within_5_s(node):
    """Last in the module: it stops the camera."""
    agent, exporter, tokens, _ = node
    stopped = time.monotonic()
    node_camera[0]()

    def shown():
        tile = {t["id"]: t for t in json.loads(http(exporter.port, "/v2/console/streams")[2])["streams"]}["cam1"]
        return tile["state"] == "error" and tile["last_error"] and tile
    tile = wait_for(shown, 5, "cam1 in error with its last error")
    assert time.monotonic() - stopped <= 5.5
    assert PASSWORD not in json.dumps(tile)
