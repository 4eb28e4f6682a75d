"""Glass-to-glass latency: from the camera making a frame to a WebRTC viewer decoding it.

What it measures
    The clock camera (tests/camera/clock_camera.py) draws, into every raw
    frame before x264 encodes it, the wall-clock millisecond it made the frame
    (32 blocks plus their complement, tests/camera/clock_pattern.py).  The real
    agent (vas-agent) runs FFmpeg (RTSP in, ``-c:v copy``, recording and RTP out)
    and the reference SFU (sfu/server.js on real mediasoup, as mediasoup.command).
    A real viewer (tests/sfu/viewer.py: aiortc + pymediasoup, H.264 decoded by
    PyAV) reads the code out of each decoded frame; latency = arrival time of the
    decoded frame - the time drawn into it.  Both ends read the same clock (one
    machine), so there is no clock offset to correct.

    Included: encode (x264 ultrafast/zerolatency), RTP payloading, RTSP over
    loopback, FFmpeg's demux/remux, mediasoup's forwarding, SRTP, aiortc's jitter
    buffer (it hands a frame over when the next frame's first packet arrives,
    about one frame interval) and H.264 decoding.  Not included: a screen.

    Next to it, on the same frames: a direct RTSP reader (PyAV, TCP like the
    agent's FFmpeg, no buffering) decodes the camera itself.  The difference
    between the two is what the agent's FFmpeg, mediasoup and WebRTC add.

    Frames whose code does not check out are counted, never measured.  The first
    --warmup s are not measured (the first keyframe and decoder start).

How to run
    .venv/bin/python bench/sfu_latency.py                 # --duration 60 --fps 25 --size 320x240
    .venv/bin/python bench/sfu_latency.py --duration 10   # quick check

Everything binds 127.0.0.1; every process is stopped at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import av
import yaml
from _common import BIN, log_tail, spawn, stop

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from camera.clock_pattern import age_ms, read_ms  # noqa: E402
from camera.fixture import SYSTEM_PYTHON, RtspCamera, free_port  # noqa: E402
from sfu.real_sfu import MEDIASOUP_VERSION, sfu_command, sfu_section_env  # noqa: E402
from sfu.viewer import Viewer  # noqa: E402


class ClockCamera(RtspCamera):
    """The RTSP test camera's fixture, running tests/camera/clock_camera.py instead."""

    def _command(self) -> list[str]:
        paths = [arg for p in self.paths for arg in ("--path", p)]
        return [SYSTEM_PYTHON, str(ROOT / "tests" / "camera" / "clock_camera.py"), "--port", str(self.port),
                "--fps", str(self.fps), "--size", self.size, *paths]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def agent_config(url: str, port: int, tmp: Path) -> dict[str, Any]:
    """One stream from the clock camera, the reference SFU run by the agent."""
    return {"version": 1, "node": {"runtime_dir": str(tmp / "run"), "drain_period": "0s"},
            "recordings": {"root": str(tmp / "recordings")},
            "defaults": {"recording": {"segment_duration": "2s"}},
            "streams": {"clock": {"url": url}},
            "mediasoup": {"api_url": f"http://127.0.0.1:{port}", "command": sfu_command(port),
                          "env": sfu_section_env(), "ready_timeout": "20s"},
            # The bench's viewer does not heartbeat: keep it for the whole run.
            "consumers": {"heartbeat_timeout": "1h"}}


def wait_live(state: Path, log: Path, timeout: float = 60) -> None:
    """Until the agent's snapshot says the stream is live."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            streams = json.loads(state.read_text())["streams"]
            if streams and streams[0]["state"] == "live":
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"the stream was not live within {timeout:.0f} s: {log_tail(log)}")


class Probe:
    """Reads the clock code out of each decoded frame once the warmup is over."""

    def __init__(self, warmup_until: float) -> None:
        self.warmup_until = warmup_until
        self.latencies: list[float] = []
        self.unreadable = 0

    def __call__(self, frame: Any, arrived: float) -> None:
        if time.monotonic() < self.warmup_until:
            return
        plane = frame.planes[0]
        drawn = read_ms(bytes(plane), plane.line_size, frame.width, frame.height)
        if drawn is None:
            self.unreadable += 1
        else:
            self.latencies.append(age_ms(drawn, int(arrived * 1000)))


def read_direct(url: str, probe: Probe, stop: threading.Event) -> None:
    """The baseline: decode the camera's RTSP straight away, until ``stop``."""
    options = {"rtsp_transport": "tcp", "fflags": "nobuffer", "flags": "low_delay"}
    with av.open(url, options=options, timeout=10) as container:
        for frame in container.decode(video=0):
            probe(frame, time.time())
            if stop.is_set():
                return


async def watch(port: int, url: str, warmup: float, duration: float) -> tuple[Probe, Probe, Viewer]:
    """A WebRTC viewer and a direct RTSP reader of the clock stream, ``warmup`` + ``duration`` s."""
    probe, direct, stop = Probe(time.monotonic() + warmup), Probe(time.monotonic() + warmup), threading.Event()
    async with Viewer(port, "clock", client_id="latency-bench", on_frame=probe) as viewer:
        await viewer.wait_frames(1, timeout=30)
        reader = asyncio.create_task(asyncio.to_thread(read_direct, url, direct, stop))
        probe.warmup_until = direct.warmup_until = time.monotonic() + warmup
        try:
            await asyncio.sleep(warmup + duration)
        finally:
            stop.set()
            await reader
        if viewer.closed.is_set():
            raise SystemExit(f"the viewer's transport closed during the run: {viewer.states}")
    return probe, direct, viewer


def figures(name: str, probe: Probe, duration: float) -> str:
    """One line of figures for one reader."""
    lat = probe.latencies
    if not lat:
        raise SystemExit(f"{name}: no readable frame in {duration:.0f} s ({probe.unreadable} unreadable)")
    return (f"  {name}: p50 {percentile(lat, 50):.0f} ms  p90 {percentile(lat, 90):.0f} ms  "
            f"p99 {percentile(lat, 99):.0f} ms  min {min(lat):.0f} ms  max {max(lat):.0f} ms  "
            f"({len(lat)} frames, {len(lat) / duration:.1f} fps, {probe.unreadable} unreadable)")


def report(probe: Probe, direct: Probe, viewer: Viewer, args: argparse.Namespace) -> None:
    """Print the figures and how they were measured."""
    print(f"glass-to-glass latency, camera frame made -> decoded ({args.size} @ {args.fps} fps, "
          f"H.264 x264 ultrafast/zerolatency, {args.duration:.0f} s measured after {args.warmup:.0f} s warmup)")
    print(figures("WebRTC viewer", probe, args.duration))
    print(figures("direct RTSP ", direct, args.duration))
    print(f"  viewer path: camera (GStreamer) -> RTSP -> FFmpeg (vas-agent, -c:v copy, tee HLS+RTP) -> RTP -> "
          f"mediasoup {MEDIASOUP_VERSION} (sfu/server.js) -> WebRTC -> aiortc + PyAV decode")
    print(f"  consumer codec {viewer.codec.get('mimeType')} {json.dumps(viewer.codec.get('parameters', {}))}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=60.0, help="seconds measured (default 60)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds not measured after the first frame")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--size", default="320x240")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="vas-sfu-latency-") as name:
        tmp = Path(name)
        camera = ClockCamera(["clock"], fps=args.fps, size=args.size).start()
        agent = None
        try:
            port = free_port()
            (tmp / "streams.yaml").write_text(yaml.safe_dump(agent_config(camera.url("clock"), port, tmp)))
            agent = spawn([str(BIN / "vas-agent"), "--config", str(tmp / "streams.yaml")], tmp / "agent.log")
            wait_live(tmp / "run" / "state.json", tmp / "agent.log")
            probe, direct, viewer = asyncio.run(watch(port, camera.url("clock"), args.warmup, args.duration))
        finally:
            stop(agent)
            camera.close()
    report(probe, direct, viewer, args)


if __name__ == "__main__":
    main()
