"""The shipped Prometheus rules: valid, and every alert tested firing and quiet."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).resolve().parents[2] / "config" / "prometheus"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's prometheus (./install.sh --dev does)", pytrace=False)
    return path


def test_rules_are_valid():
    result = subprocess.run([promtool(), "check", "rules", str(RULES / "alerts.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_every_alert_has_passing_unit_tests():
    result = subprocess.run([promtool(), "test", "rules", "alerts_test.yml"], cwd=RULES,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {r["alert"] for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    tested = {t["alertname"] for case in yaml.safe_load((RULES / "alerts_test.yml").read_text())["tests"]
              for t in case["alert_rule_test"]}
    assert alerts == tested


def test_scrape_examples_are_valid_prometheus_config():
    result = subprocess.run([promtool(), "check", "config", str(RULES / "scrape.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_both_firing_and_quiet():
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load((RULES / "alerts_test.yml").read_text())["tests"]:
        for t in case["alert_rule_test"]:
            (firing if t.get("exp_alerts") else quiet).add(t["alertname"])
    alerts = {r["alert"] for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    assert sorted(alerts - firing) == [] and sorted(alerts - quiet) == []


def test_the_down_and_missing_alerts_cover_every_shipped_scrape_job():
    """Issue 18, item 19: a job added to scrape.yml must not go unwatched."""
    import re
    jobs = [j["job_name"] for j in yaml.safe_load((RULES / "scrape.yml").read_text())["scrape_configs"]]
    rules = {r["alert"]: r["expr"] for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]
             for r in g["rules"]}
    for name in ("VasExporterDown", "VasNodeMissing"):
        selectors = re.findall(r'up\{job(=~?)"([^"]+)"\}', rules[name])
        assert selectors, name
        for op, value in selectors:
            watched = [j for j in jobs if (re.fullmatch(value, j) if op == "=~" else j == value)]
            assert watched == jobs, (name, value, jobs)
