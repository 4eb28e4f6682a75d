"""config/grafana/vas-overview.json (issue 18, item 20): valid JSON, every query parses
(promtool) and names only metrics the exporter really serves, every series has a legend,
and the panels operators asked for are there.  (tests/integration/test_dashboard.py runs
the queries against a real Prometheus scraping a real node.)"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from .conftest import snapshot_dict, stream

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "config" / "grafana" / "vas-overview.json"
#: Names that are not series of ours: PromQL functions and keywords, and Prometheus's own ``up``.
NOT_METRICS = {"up", "sum", "max", "by", "rate", "increase", "time", "histogram_quantile", "clamp_min", "le"}


def panels() -> list[dict]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def targets() -> list[tuple[str, dict]]:
    return [(p["title"], t) for p in panels() for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}|\"[^\"]*\"", "", expr)
    return {n for n in re.findall(r"\b[a-z_][a-z0-9_]*\b", without_labels)
            if n.startswith("vas_") or n == "up"}


def test_panels_have_unique_ids_a_place_and_queries():
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels():
        assert p["targets"] and {"x", "y", "w", "h"} <= set(p["gridPos"]) and p.get("description"), p["title"]


def test_every_series_has_a_legend():
    missing = [title for title, t in targets() if not t.get("legendFormat") or "{{" not in t["legendFormat"]
               and not re.fullmatch(r"[a-z ]+", t["legendFormat"])]
    assert missing == []


def test_every_query_parses_with_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install Debian's prometheus (./install.sh --dev does)", pytrace=False)
    rules = [{"record": f"dashboard:query{i}", "expr": t["expr"].replace("$instance", ".*")}
             for i, (_, t) in enumerate(targets())]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


async def test_every_metric_a_panel_uses_is_served(client, node):
    now = time.time()
    hist = {"buckets": [[0.01, 1], ["+Inf", 2]], "sum": 0.5, "count": 2}
    cam = stream("cam1", pid=os.getpid(), pid_started_at=now - 30,
                 recording={"enabled": True, "segment_count": 3, "total_bytes": 300, "oldest_segment_at": now - 60,
                            "newest_segment_at": now - 5, "deleted": {"age": {"segments": 1, "bytes": 10}}},
                 producer={"id": "p1", "since": now - 20, "confirmed": True})
    data = snapshot_dict([cam], sfu={"state": "up", "restart_reasons": {"exit": 1}},
                         consumers={"active": [], "per_stream": {"cam1": 1}, "ended": {},
                                    "session_duration_seconds": hist},
                         fleet={"node": "a", "etcd_up": True, "owned": ["cam1"], "takeovers": {"start": 1},
                                "lease_renewal_seconds": hist})
    data["agent"]["event_loop_lag_seconds"] = hist
    node.write(data)
    await client.get("/v2/health/system")  # the API's own latency histogram
    text = await (await client.get("/v2/metrics")).text()
    served = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    used = set().union(*(metric_names(t["expr"]) for _, t in targets())) - {"up"}
    assert sorted(used - served) == []


def test_the_panels_operators_asked_for_are_there():
    exprs = " ".join(t["expr"] for _, t in targets())
    for metric in ("vas_stream_state", "vas_stream_uptime_seconds", "vas_recording_oldest_segment_timestamp_seconds",
                   "vas_recording_newest_segment_timestamp_seconds",
                   "vas_config_last_reload_successful", "vas_sfu_up", "vas_producers", "vas_fleet_etcd_up",
                   "vas_fleet_owned_streams", 'up{job=~"vas.*"}'):
        assert metric in exprs, metric
    tables = [p for p in panels() if p["type"] == "table"]
    assert any("vas_stream_state" in t["expr"] for p in tables for t in p["targets"]), "a per-stream state table"


def test_the_dashboard_is_in_the_readme_and_the_docs():
    for doc in ("README.md", "docs/metrics.md", "docs/operations.md"):
        assert "config/grafana/vas-overview.json" in (ROOT / doc).read_text(), doc
