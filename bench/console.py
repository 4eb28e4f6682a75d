"""The operator console's costs (issue 20): snapshots, polling 100 cameras, a 24 h playlist,
clip export against `cp`, and the exporter's memory.

What it measures
    A real vas-agent indexes a recordings root the bench fills (every stream disabled, so
    no camera is needed: the segments are synthetic, made once by FFmpeg from a test
    pattern and copied): 100 cameras with a few 2 s segments each (320x240), a ``day``
    stream of 43,200 stand-in segments (24 h at 2 s), and a ``clip`` stream of 2 s
    segments at ~2 Mbit/s (640x360).  vas-exporter serves it on 127.0.0.1.
      snapshot.jpg   cold (the first request of 20 cameras: index + read + FFmpeg decode)
                     and cached (the same again at once), p50 / p99
      polling        100 cameras' snapshot.jpg every 10 s (10 requests/s, spread evenly)
                     plus /v2/console/streams every 2 s (the page), for --poll s, while
                     every camera gets a new segment every 2 s (so each poll decodes):
                     the exporter's CPU including its FFmpeg children, % of one core
      playlist       playlist.m3u8 of the ``day`` stream's whole 24 h, p50 of 5; and the
                     pure build of the same 43,200 segments in-process
      clip           clip.mp4 of the whole ``clip`` stream, MB/s of segment bytes, against
                     `cp` of the same files (both from a warm page cache), same run
      memory         the exporter's RSS at the end

How to run
    .venv/bin/python bench/console.py              # --poll 30 --clip-seconds 240
    .venv/bin/python bench/console.py --poll 10    # quick check
"""
from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml

# bench/exporter.py and tests/exporter/ would shadow the exporter package: import it first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
from agent import tokens  # noqa: E402
from exporter import clips, playlists  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _common as c  # noqa: E402

from camera.fixture import free_port  # noqa: E402

CAMERAS = 100
DAY = 43_200


def ffmpeg_segments(out: Path, size: str, bitrate: str, seconds: int) -> list[Path]:
    """2 s MPEG-TS segments of a test pattern (one keyframe per segment start)."""
    out.mkdir(parents=True)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25", "-t", str(seconds),
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-b:v", bitrate, "-f", "hls",
                    "-hls_time", "2", "-hls_list_size", "0", "-hls_segment_filename", str(out / "s_%06d.ts"),
                    str(out / "gen.m3u8")], check=True, timeout=600)
    return sorted(out.glob("*.ts"))


def place(src: Path, dest: Path, mtime: float) -> None:
    """Copy ``src`` to ``dest`` dated ``mtime``, appearing under its name at once (like temp_file)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.utime(tmp, (mtime, mtime))
    os.rename(tmp, dest)


def populate(root: Path, small: list[Path], big: list[Path], now: float) -> int:
    """The recordings root; returns the clip stream's bytes."""
    for i in range(CAMERAS):
        d = root / c.stream_id(i)
        d.mkdir(parents=True)
        for k, src in enumerate(small[:3]):
            place(src, d / f"{c.stream_id(i)}_A_{k:06d}.ts", now - 2 * (3 - k))
    day = root / "day"
    day.mkdir()
    for k in range(DAY):
        c.write_segment(day / f"day_A_{k:06d}.ts", now - 86400 + 2 * (k + 1))
    clip = root / "clip"
    clip.mkdir()
    for k, src in enumerate(big):
        place(src, clip / f"clip_A_{k:06d}.ts", now - 2 * (len(big) - k))
    return sum(p.stat().st_size for p in clip.glob("*.ts"))


def write_config(tmp: Path, port: int) -> Path:
    streams = {sid: {"url": "rtsp://127.0.0.1:9/none", "enabled": False, "recording": {"segment_duration": "2s"}}
               for sid in [*(c.stream_id(i) for i in range(CAMERAS)), "day", "clip"]}
    cfg = {"version": 1, "node": {"runtime_dir": str(tmp / "run"), "drain_period": "0s"},
           "recordings": {"root": str(tmp / "rec")}, "streams": streams,
           "exporter": {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp / "tokens")}}
    path = tmp / "streams.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Client:
    """One keep-alive connection per thread."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.headers = port, {"Authorization": f"Bearer {token}"}
        self.local = threading.local()

    def get(self, path: str) -> tuple[int, bytes, float]:
        for attempt in (1, 2):  # a keep-alive connection the server closed while idle: once more, new
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            t0 = time.perf_counter()
            try:
                conn.request("GET", path, headers=self.headers)
                resp = conn.getresponse()
                body = resp.read()
                return resp.status, body, time.perf_counter() - t0
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def cpu_split(proc: psutil.Process) -> tuple[float, float]:
    """``(the exporter's own CPU seconds, its reaped children's)``."""
    t = proc.cpu_times()
    return t.user + t.system, t.children_user + t.children_system


def ffmpeg_start_cpu(runs: int = 10) -> float:
    """CPU ms of ``ffmpeg -version``: the floor of any FFmpeg process (loading its libraries)."""
    import resource
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        subprocess.run(["ffmpeg", "-version"], capture_output=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / runs * 1000


def snapshot_latency(client: Client) -> None:
    cold, cached = [], []
    for i in range(20):
        status, body, took = client.get(f"/v2/streams/{c.stream_id(i)}/snapshot.jpg")
        assert status == 200 and body[:2] == b"\xff\xd8", (status, body[:200])
        cold.append(took * 1000)
        cached.append(client.get(f"/v2/streams/{c.stream_id(i)}/snapshot.jpg")[2] * 1000)
    print(f"snapshot.jpg cold (index + read + FFmpeg decode): p50 {c.pct(cold, 50):.1f} ms, "
          f"p99 {c.pct(cold, 99):.1f} ms; cached: p50 {c.pct(cached, 50):.2f} ms, p99 {c.pct(cached, 99):.2f} ms")


def poll(client: Client, exporter: psutil.Process, rec: Path, small: list[Path], seconds: float) -> None:
    """100 cameras every 10 s and the page's status every 2 s, new segments every 2 s."""
    stop = threading.Event()

    def writer() -> None:
        seq = 3
        while not stop.wait(2.0):
            now = time.time()
            for i in range(CAMERAS):
                sid = c.stream_id(i)
                place(small[seq % len(small)], rec / sid / f"{sid}_A_{seq:06d}.ts", now)
            seq += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(2.5)
    errors, latencies = 0, []
    own0, kids0 = cpu_split(exporter)
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = []
        k = 0
        while time.monotonic() - t0 < seconds:
            due = t0 + k * 0.1
            time.sleep(max(0.0, due - time.monotonic()))
            futures.append(pool.submit(client.get, f"/v2/streams/{c.stream_id(k % CAMERAS)}/snapshot.jpg"))
            if k % 20 == 0:
                futures.append(pool.submit(client.get, "/v2/console/streams"))
            k += 1
        for f in futures:
            status, body, took = f.result()
            errors += status != 200
            latencies.append(took * 1000)
    own1, kids1 = cpu_split(exporter)
    wall, own, kids = time.monotonic() - t0, own1 - own0, kids1 - kids0
    cpu = own + kids
    stop.set()
    thread.join()
    print(f"polling 100 cameras every 10 s + status every 2 s, {seconds:.0f} s of requests (answered within "
          f"{wall:.0f} s): exporter CPU incl. its FFmpeg children {cpu:.1f} s = {100 * cpu / seconds:.1f} % of one "
          f"core in steady state ({cpu / (seconds / 10):.2f} CPU-s per 10 s cycle); {len(futures)} requests, "
          f"{errors} errors, latency p50 {c.pct(latencies, 50):.0f} ms, p99 {c.pct(latencies, 99):.0f} ms")
    decodes = CAMERAS * seconds / 10
    print(f"  split: exporter {own:.1f} s, its FFmpeg decodes {kids:.1f} s = {1000 * kids / decodes:.0f} ms CPU per "
          f"decode; anchor, same run: `ffmpeg -version` alone costs {ffmpeg_start_cpu():.0f} ms CPU")


def playlist_24h(client: Client) -> None:
    now = time.time()
    times, size = [], 0
    for _ in range(5):
        status, body, took = client.get(f"/v2/recordings/day/playlist.m3u8?start={now - 86400:.0f}&end={now:.0f}")
        assert status == 200, body[:300]
        times.append(took * 1000)
        size = len(body)
    segments = [[f"day_A_{k:06d}.ts", now - 86400 + 2 * k, 2.0, 16, None] for k in range(DAY)]
    t0 = time.perf_counter()
    playlists.vod("day", segments)
    build = (time.perf_counter() - t0) * 1000
    print(f"playlist.m3u8 of 24 h at 2 s ({DAY} segments, {size / 2**20:.1f} MiB): p50 {c.pct(times, 50):.0f} ms, "
          f"max {max(times):.0f} ms end to end (agent index query + JSON + build); the build alone {build:.0f} ms")


def clip_vs_cp(client: Client, rec: Path, tmp: Path, total: int) -> None:
    files = sorted((rec / "clip").glob("*.ts"))
    for f in files:  # warm the page cache for both
        f.read_bytes()
    start = min(f.stat().st_mtime for f in files) - 2
    end = max(f.stat().st_mtime for f in files) + 1
    status, body, took = client.get(f"/v2/recordings/clip/clip.mp4?start={start:.0f}&end={end:.0f}")
    assert status == 200 and b"ftyp" in body[:64], body[:200]
    dest = tmp / "cp"
    dest.mkdir()
    t0 = time.perf_counter()
    subprocess.run(["cp", *map(str, files), str(dest)], check=True)
    cp = time.perf_counter() - t0
    fds = [os.open(f, os.O_RDONLY) for f in files]
    try:  # the same remux with nobody in between: FFmpeg alone, to /dev/null
        t0 = time.perf_counter()
        subprocess.run(clips.clip_argv("ffmpeg"), input=clips.concat_script([[fd] for fd in fds]).encode(),
                       stdout=subprocess.DEVNULL, pass_fds=fds, check=True)
        alone = time.perf_counter() - t0
    finally:
        for fd in fds:
            os.close(fd)
    mb = total / 2**20
    print(f"clip.mp4 of {len(files)} segments ({mb:.0f} MiB, clip {len(body) / 2**20:.0f} MiB): {mb / took:.0f} MB/s; "
          f"same run: cp of the same files {mb / cp:.0f} MB/s ({took / cp:.1f}x cp's time), the FFmpeg remux "
          f"alone {mb / alone:.0f} MB/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--poll", type=float, default=30.0, help="seconds of polling 100 cameras")
    ap.add_argument("--clip-seconds", type=int, default=240, help="seconds of recording in the clip stream")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    with c.bench_tempdir("vas-console-", keep=args.keep) as tmp:
        small = ffmpeg_segments(tmp / "src-small", "320x240", "300k", 20)
        big = ffmpeg_segments(tmp / "src-big", "640x360", "2M", args.clip_seconds)
        total = populate(tmp / "rec", small, big, time.time())
        port = free_port()
        config = write_config(tmp, port)
        viewer = tokens.add(tmp / "tokens", "bench", "viewer")
        agent = c.spawn([str(c.BIN / "vas-agent"), "--config", str(config)], tmp / "agent.log")
        exporter = None
        try:
            c.wait_snapshot(tmp / "run" / "state.json",
                            lambda s: (s.get("recordings") or {}).get("indexed"), 120)
            exporter = c.spawn([str(c.BIN / "vas-exporter"), "--config", str(config)], tmp / "exporter.log")
            client = Client(port, viewer)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if client.get("/livez")[0] == 200:
                        break
                except OSError:
                    client.local.conn = None
                    time.sleep(0.2)
            proc = psutil.Process(exporter.pid)
            snapshot_latency(client)
            poll(client, proc, tmp / "rec", small, args.poll)
            playlist_24h(client)
            clip_vs_cp(client, tmp / "rec", tmp, total)
            print(f"exporter RSS with the console in use: {proc.memory_info().rss / 2**20:.0f} MiB")
            print(json.dumps({"log_tail": c.log_tail(tmp / "exporter.log", 2)}))
        finally:
            c.stop(exporter)
            c.stop(agent)
        print(c.machine_line("end"))


if __name__ == "__main__":
    main()
