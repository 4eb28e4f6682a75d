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
