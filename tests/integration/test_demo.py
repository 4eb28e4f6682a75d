"""The README's demo (config/demo.yaml) really runs: synthetic cameras live and recording."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .harness import AgentProcess, wait_for

pytestmark = pytest.mark.integration
DEMO = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"


def test_demo_config_goes_live_and_records(tmp_path):
    # The demo's paths are relative to its file: run a copy so they land in tmp_path.
    conf_dir = tmp_path / "config"
    conf_dir.mkdir()
    shutil.copy(DEMO, conf_dir / "streams.yaml")
    agent = AgentProcess(conf_dir, {})
    agent.config_path.write_text(DEMO.read_text())
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
            wait_for(lambda: agent.segments(sid), 30, f"a segment of {sid}")
        status = agent.vasctl("status")
        assert status.returncode == 0 and status.stdout.count(" live ") == 3
    finally:
        assert agent.stop() == 0
