"""config/grafana/vas-overview.json: every panel's query runs against a real Prometheus
that scraped a running exporter; panels that expect data get it."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from camera.fixture import free_port

from .harness import config, wait_for
from .prometheus import scraping
from .test_exporter import Exporter, http

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana" / "vas-overview.json"


def test_every_panel_query_runs_and_returns_data(rtsp_camera, agent_factory, tmp_path):
    port = free_port()
    cfg = config({"cam1": {"url": rtsp_camera.url("cam1")}, "cam2": {"url": rtsp_camera.url("cam2")}})
    cfg["exporter"] = {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp_path / "tokens")}
    agent = agent_factory(cfg).start()
    agent.wait_all("live", ["cam1", "cam2"])
    exporter = Exporter(agent, port)
    with scraping(port, tmp_path) as prom:
        query = prom.query
        wait_for(lambda: query("up")[1], 30, "the first scrape")
        for _ in range(20):  # rates need a few samples; exercise the API for its latency panel
            http(port, "/v2/health/system")
            time.sleep(0.5)
        for panel in json.loads(DASHBOARD.read_text())["panels"]:
            for target in panel.get("targets", []):  # (rows have none)
                expr = target["expr"].replace('instance=~"$instance"', 'instance=~".*"')
                status, result = query(expr)
                assert status == "success", (panel["title"], expr)
                # A panel that may legitimately be empty here (no SFU, not a fleet, nothing
                # deleted yet) says so to the operator: "Empty without ..." / "Empty until ...".
                if "Empty" not in panel["description"]:
                    assert wait_for(lambda expr=expr: query(expr)[1], 20, f"data for {panel['title']}"), expr
    exporter.stop()  # (the agent_factory fixture stops the agent)
