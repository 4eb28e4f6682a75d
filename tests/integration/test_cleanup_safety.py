"""Manual cleanups that delete only what was asked (issue 16, item 10): over real HTTP
to a real exporter and agent, and on the agent's own control socket and vasctl; and a
symlinked stream directory said out loud everywhere an operator looks (item 6)."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from agent.client import request as control
from camera.fixture import free_port

from .harness import BIN, config, wait_for
from .test_exporter import Exporter, http

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DAY = 86400.0


@pytest.fixture
def node(rtsp_camera, agent_factory, tmp_path):
    """One recording stream with three 3-day-old segments and one 30 minutes old, its exporter
    and an admin token."""
    port = free_port()
    cfg = config({"cam1": {"url": rtsp_camera.url("cam1"), "recording": {"retention": "30d"}}})
    cfg["exporter"] = {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp_path / "tokens")}
    agent = agent_factory(cfg)
    planted = []
    for i, age in enumerate((3 * DAY, 3 * DAY - 60, 3 * DAY - 120, 1800)):
        path = agent.recordings / "cam1" / f"cam1_20200101T000000000Z_00000{i}.ts"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
        os.utime(path, (time.time() - age,) * 2)
        planted.append(path)
    admin = subprocess.run([str(BIN / "vasctl"), "--config", str(agent.config_path), "token", "add", "ops",
                            "--scope", "admin"], capture_output=True, text=True, check=True).stdout.split()[-1]
    agent.start()
    wait_for(lambda: agent.streams()["cam1"]["recording"].get("segment_count", 0) >= 5, 30, "indexed")
    exporter = Exporter(agent, port)
    yield agent, exporter, admin, planted
    exporter.stop()


@pytest.mark.parametrize("query, parameter", [
    ("retention_days=1e-300", "retention_days"),          # "delete everything older than now"
    ("retention_days=0.01", "retention_days"),            # 14 minutes: under the one-hour floor
    ("retention_days=inf", "retention_days"),
    ("dryrun=1&retention_days=1", "dryrun"),              # a typo must not turn a dry run into a real one
    ("dry_run=1&force=1", "force"),
    ("retention_days=2&retention_days=1e-300", "retention_days"),  # repeated: which one?
    ("dry_run=maybe", "dry_run"),
    ("dry_run=", "dry_run"),
])
def test_a_cleanup_it_does_not_understand_is_400_and_deletes_nothing(node, query, parameter):
    agent, exporter, admin, planted = node
    for path in ("/v2/health/recordings/cam1/cleanup", "/v2/health/recordings/cleanup"):
        status, body = http(exporter.port, f"{path}?{query}", "POST", admin)
        assert status == 400 and json.loads(body)["parameter"] == parameter, body
    # The agent enforces the same rules itself: it deletes, so it trusts no caller.
    code, answer = control(str(agent.runtime_dir / "agent.sock"), "POST", f"/recordings/cleanup?{query}")
    assert code == 400 and answer["parameter"] == parameter, answer
    assert all(p.exists() for p in planted)


def test_dry_run_over_http_deletes_nothing_and_says_what_would_go(node):
    agent, exporter, admin, planted = node
    status, body = http(exporter.port, "/v2/health/recordings/cam1/cleanup?retention_days=1&dry_run=1", "POST", admin)
    one = json.loads(body)
    assert status == 200 and one["dry_run"] is True and one["deleted_count"] == 3
    status, body = http(exporter.port, "/v2/health/recordings/cleanup?dry_run=true&retention_days=1", "POST", admin)
    assert status == 200 and json.loads(body)["dry_run"] is True and json.loads(body)["deleted_count"] == 3
    assert all(p.exists() for p in planted)
    status, body = http(exporter.port, "/v2/health/recordings/cam1/cleanup?retention_days=1&dry_run=0", "POST", admin)
    assert status == 200 and json.loads(body)["dry_run"] is False and json.loads(body)["deleted_count"] == 3
    assert [p.exists() for p in planted] == [False, False, False, True]


def test_the_one_hour_floor_is_allowed_and_vasctl_refuses_below_it(node):
    agent, exporter, admin, planted = node
    low = agent.vasctl("cleanup", "cam1", "--retention-days", "0.001")
    assert low.returncode == 1 and "--retention-days" in low.stderr and "one hour" in low.stderr
    assert all(p.exists() for p in planted)
    status, body = http(exporter.port, f"/v2/health/recordings/cam1/cleanup?retention_days={1 / 24!r}", "POST", admin)
    assert status == 200 and json.loads(body)["deleted_count"] == 3, body
    assert planted[3].exists(), "30 minutes old: younger than the one-hour floor"


def test_a_symlinked_stream_directory_is_said_out_loud(rtsp_camera, agent_factory, tmp_path):
    """Item 6: refused (never followed, nothing deleted there), and not silently: a WARNING
    at start and on reload, UNSAFE in vasctl status, `unsafe` in the API, a metric."""
    elsewhere = tmp_path / "bigdisk" / "cam"
    elsewhere.mkdir(parents=True)
    old = elsewhere / "cam_20200101T000000000Z_000001.ts"
    old.write_bytes(b"x" * 1000)
    os.utime(old, (time.time() - 30 * DAY,) * 2)
    port = free_port()
    cfg = config({"cam": {"url": rtsp_camera.url("cam1"), "enabled": False, "recording": {"retention": "1d"}},
                  "cam1": {"url": rtsp_camera.url("cam1"), "recording": {"retention": "1d"}}})
    cfg["exporter"] = {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp_path / "tokens")}
    agent = agent_factory(cfg)
    agent.recordings.mkdir(parents=True)
    (agent.recordings / "cam").symlink_to(elsewhere)
    agent.start()
    warning = "recordings/cam is a symlink to"
    wait_for(lambda: warning in agent.log(), 30, "the warning at start")
    exporter = Exporter(agent, port)
    try:
        status, body = wait_for(lambda: (r := http(port, "/v2/health/recordings/cam")) and "symlink" in r[1] and r,
                                10, "unsafe in the API")
        assert json.loads(body)["unsafe"] == "symlink, retention not applied"
        assert json.loads(http(port, "/v2/health/recordings/cam1")[1])["unsafe"] is None
        assert "vas_recording_unsafe_directories 1.0" in http(port, "/v2/metrics")[1]
        table = agent.vasctl("status").stdout
        row = next(line for line in table.splitlines() if line.startswith("cam "))
        assert "UNSAFE" in row and "recordings/cam: UNSAFE: symlink, retention not applied" in table
        assert agent.log().count(warning) == 1
        assert agent.vasctl("reload").returncode == 0
        wait_for(lambda: agent.log().count(warning) == 2, 10, "the warning again on reload")
        assert old.exists(), "never followed"
    finally:
        exporter.stop()
