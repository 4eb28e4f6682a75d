"""The exporter as operators run it: a real agent with real FFmpeg and the RTSP
camera, the exporter process, and a real Prometheus scraping it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from camera.fixture import free_port

from .harness import BIN, alive, config, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PASSWORD = "Xq9-camera-secret"


def http(port: int, path: str, method: str = "GET", token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


class Exporter:
    def __init__(self, agent, port: int) -> None:
        self.port, self.log = port, agent.workdir / "exporter.log"
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen([str(BIN / "vas-exporter"), "--config", str(agent.config_path)],
                                         stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: http(port, "/livez")[0] == 200, 15, "the exporter")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def node(rtsp_camera, camera_factory, agent_factory, tmp_path):
    """An agent with two real streams (one with a password) and its exporter."""
    secure = camera_factory(("cam1",), user="admin", password=PASSWORD)
    port = free_port()
    cfg = config({"cam1": {"url": rtsp_camera.url("cam1")},
                  "locked": {"url": secure.url("cam1", user="admin", password=PASSWORD)}})
    cfg["exporter"] = {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp_path / "tokens"), "stale_after": "3s"}
    cfg["node"] = {"drain_period": "3s"}
    agent = agent_factory(cfg).start()
    agent.wait_all("live", ["cam1", "locked"])
    exporter = Exporter(agent, port)
    yield agent, exporter
    exporter.stop()


def test_ready_metrics_and_api_with_a_running_agent(node):
    agent, exporter = node
    status, body = http(exporter.port, "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"
    status, text = http(exporter.port, "/v2/metrics")
    assert status == 200 and 'vas_streams{state="live"} 2.0' in text
    assert 'vas_ffmpeg_resident_memory_bytes{stream="cam1"}' in text  # psutil at scrape time
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    ingestion = json.loads(http(exporter.port, "/v2/health/ingestion")[1])
    assert {p["stream_id"] for p in ingestion["processes"] if p["rss_bytes"]} == {"cam1", "locked"}


def test_sigstop_turns_readiness_503_in_time_and_sigcont_brings_it_back(node):
    agent, exporter = node
    agent.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        wait_for(lambda: http(exporter.port, "/readyz")[0] == 503, 3 + 1 + 1, "readiness 503")
        assert time.monotonic() - started <= 3 + 1 + 0.5  # stale_after + 1 s (+ polling slack)
        assert http(exporter.port, "/livez")[0] == 200
    finally:
        agent.signal(signal.SIGCONT)
    wait_for(lambda: http(exporter.port, "/readyz")[0] == 200, 5, "readiness back to 200")


def test_a_killed_agent_is_reported_down_while_livez_answers(node):
    agent, exporter = node
    agent.kill()
    wait_for(lambda: http(exporter.port, "/readyz")[0] == 503, 5, "readiness 503")
    text = wait_for(lambda: (t := http(exporter.port, "/v2/metrics")[1]) and "vas_agent_up 0.0" in t and t, 5,
                    "vas_agent_up 0")
    assert "vas_agent_snapshot_age_seconds" in text
    assert http(exporter.port, "/livez")[0] == 200
    status, body = http(exporter.port, "/v2/health/system")
    assert status == 200 and json.loads(body)["status"] == "down"


def test_drain_reports_not_ready_before_ffmpeg_gets_sigterm(node):
    agent, exporter = node
    pids = [s["pid"] for s in agent.streams().values()]
    agent.signal(signal.SIGTERM)
    seen = wait_for(lambda: (r := http(exporter.port, "/readyz")) and r[0] == 503 and r, 2, "not ready")
    assert "agent_running" in json.loads(seen[1])["failing"]
    assert all(alive(p) for p in pids)  # still streaming: the drain comes first
    assert agent.proc.wait(20) == 0
    assert not any(alive(p) for p in pids)


def test_mutations_reach_the_agent_with_tokens_only(node):
    agent, exporter = node
    tokens = agent.workdir.parent / "tokens"
    admin = subprocess.run([str(BIN / "vasctl"), "--config", str(agent.config_path), "token", "add", "ops",
                            "--scope", "admin"], capture_output=True, text=True, check=True).stdout.split()[-1]
    assert oct(tokens.stat().st_mode & 0o777) == "0o640"
    assert admin not in tokens.read_text()
    exporter.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(agent.segments("cam1")) >= 2, 20, "fresh segments (the newest is never deleted)")
    # Written beside the root and moved in already old: the watcher indexes the move with the file's
    # real mtime at once (written in place, its close and its utime would be two events).
    staged = agent.recordings.parent / "cam1_20200101T000000000Z_000001.ts"
    staged.write_bytes(b"x" * 2048)
    os.utime(staged, (time.time() - 10 * 86400,) * 2)
    old = agent.recordings / "cam1" / staged.name
    os.rename(staged, old)
    # The cleanup plans from the index: wait for the watcher to have indexed the move.
    wait_for(lambda: (agent.streams()["cam1"]["recording"].get("oldest_segment_at") or time.time())
             < time.time() - 5 * 86400, 10, "the moved-in segment in the index")
    path = "/v2/health/recordings/cam1/cleanup?retention_days=5"
    assert http(exporter.port, path, "POST")[0] == 401
    status, body = wait_for(lambda: (r := http(exporter.port, path, "POST", admin)) and r[0] == 200 and r, 5,
                            "the token to load")
    result = json.loads(body)
    assert result["stream_id"] == "cam1" and result["deleted_count"] == 1 and result["retention_days"] == 5
    assert not old.exists()
    status, body = http(exporter.port, "/v2/health/consumers/c1/heartbeat", "POST", admin)
    assert status == 404 and "unknown consumer" in body


def test_no_response_or_log_shows_a_camera_password(node):
    agent, exporter = node
    texts = [http(exporter.port, p)[1] for p in ("/v2/health/system", "/v2/health/streams/locked",
                                                 "/v2/health/ingestion", "/v2/metrics", "/readyz")]
    texts += [agent.log(), exporter.log.read_text(), (agent.runtime_dir / "state.json").read_text()]
    assert all(PASSWORD not in t for t in texts)
    assert "rtsp://admin:***@" in texts[1]


def test_prometheus_scrapes_the_exporter(node, tmp_path):
    from .prometheus import scraping
    agent, exporter = node
    with scraping(exporter.port, tmp_path) as prom:
        def query(q: str) -> list:
            return prom.query(q)[1]
        up = wait_for(lambda: query('up{job="vas"}'), 30, "a first scrape")
        assert up[0]["value"][1] == "1"
        for q in ('vas_streams{state="live"}', "vas_stream_up", "vas_ffmpeg_resident_memory_bytes",
                  "vas_agent_up", "vas_api_requests_total", "vas_stream_restarts_total or vas_stream_frames_total"):
            assert wait_for(lambda q=q: query(q), 15, f"data for {q}"), q
        live = query('sum(vas_stream_up)')
        assert float(live[0]["value"][1]) == 2
