"""The README's demos really run: config/demo.yaml (synthetic cameras live and recording) and
config/demo-sfu.yaml (the same, live in the reference SFU on real mediasoup)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from camera.fixture import free_port

from .harness import BIN, AgentProcess, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo.yaml"
DEMO_SFU = ROOT / "config" / "demo-sfu.yaml"


def test_demo_config_goes_live_and_records(tmp_path):
    # The demo's paths are relative to its file: run a copy so they land in tmp_path.
    conf_dir = tmp_path / "config"
    conf_dir.mkdir()
    shutil.copy(DEMO, conf_dir / "streams.yaml")
    agent = AgentProcess(conf_dir, {})
    port = free_port()  # the demo's 8080 may be taken where tests run
    agent.config_path.write_text(DEMO.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    exporter = None
    agent.runtime_dir = tmp_path / ".demo" / "run"
    agent.recordings = tmp_path / ".demo" / "recordings"
    try:
        agent.start()
        synthetic = ["testsrc", "bars", "mandelbrot"]
        agent.wait_all("live", synthetic, timeout=40)
        offline = wait_for(lambda: (s := agent.streams()["offline"])["restarts"] >= 1 and s, 40,
                           "the offline demo camera to fail")
        assert offline["url"].startswith("rtsp://demo:***@")
        for sid in synthetic:
            wait_for(lambda sid=sid: agent.segments(sid), 30, f"a segment of {sid}")
        status = agent.vasctl("status")
        assert status.returncode == 0 and status.stdout.count(" live ") == 3
        # What the quick start prints: the exporter beside it.
        exporter = subprocess.Popen([str(BIN / "vas-exporter"), "--config", str(agent.config_path)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ready = wait_for(lambda: _get(port, "/readyz"), 15, "the demo exporter")
        assert json.loads(ready)["status"] == "ready"  # 3 of 4 live, no SFU in the demo
        assert 'vas_streams{state="live"} 3.0' in _get(port, "/v2/metrics")
    finally:
        if exporter is not None:
            exporter.terminate()
            exporter.wait(10)
        assert agent.stop() == 0


def test_demo_with_sfu_is_live_in_real_mediasoup_and_records(tmp_path):
    from tests.sfu.real_sfu import get, sfu_env

    conf_dir = tmp_path / "config"
    conf_dir.mkdir()
    (tmp_path / "sfu").symlink_to(ROOT / "sfu")  # the demo names ../sfu relative to its file
    sfu_port, port = free_port(), free_port()
    text = DEMO_SFU.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    agent = AgentProcess(conf_dir, {}, env={"VAS_MEDIASOUP_MODULES": sfu_env()["NODE_PATH"]})
    agent.config_path.write_text(text.replace("3000", str(sfu_port)))
    agent.runtime_dir = tmp_path / ".demo-sfu" / "run"
    agent.recordings = tmp_path / ".demo-sfu" / "recordings"
    try:
        agent.start()
        agent.wait_all("live", ["testsrc", "bars"], timeout=40)

        def counting() -> dict[str, int]:  # mediasoup's own counters, twice, growing
            listed: list[dict] = get(sfu_port, "/producers")  # type: ignore[assignment]
            return {p["stream_id"]: p["packets"] for p in listed}
        first = wait_for(lambda: (c := counting()).keys() == {"testsrc", "bars"} and all(c.values()) and c,
                         30, "both demo cameras counted by mediasoup")
        wait_for(lambda: all(n > first[sid] for sid, n in counting().items()), 15, "packets growing")
        for sid in ("testsrc", "bars"):
            wait_for(lambda sid=sid: agent.segments(sid), 30, f"a segment of {sid}")
        # The viewer command the demo prints: a real WebRTC client decodes the camera.
        picture = tmp_path / "bars.ppm"
        watched = subprocess.run([sys.executable, "-m", "tests.sfu.viewer", "--port", str(sfu_port),
                                  "--stream", "bars", "--seconds", "2", "--save", str(picture)],
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert watched.returncode == 0 and "640x360" in watched.stdout, watched.stdout + watched.stderr
        assert picture.read_bytes().startswith(b"P6 640 360 255\n")
        assert len(picture.read_bytes()) == len(b"P6 640 360 255\n") + 640 * 360 * 3
    finally:
        assert agent.stop() == 0


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return resp.read().decode()
