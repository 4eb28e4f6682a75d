"""The shipped systemd units: `systemd-analyze verify` clean and exposure within target."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"
#: `systemd-analyze security --offline=true` exposure targets (0 = locked down, 10 = exposed).
TARGETS = {"vas-agent.service": 5.0, "vas-exporter.service": 2.5, "vas-sfu.service": 2.5}


def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze not found (Debian: systemd)", pytrace=False)
    return path


@pytest.mark.parametrize("unit", sorted(TARGETS))
def test_unit_verifies_clean(unit, tmp_path):
    if not (UNITS / unit).exists():
        pytest.fail(f"{unit} is missing from systemd/")
    # The installed binaries live in /usr/local/bin; point at this checkout's venv instead.
    text = (UNITS / unit).read_text().replace("/usr/local/bin/", f"{Path(sys.executable).parent}/")
    (tmp_path / unit).write_text(text)
    result = subprocess.run([analyze(), "verify", str(tmp_path / unit)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.parametrize("unit,target", sorted(TARGETS.items()))
def test_exposure_is_within_target(unit, target):
    result = subprocess.run([analyze(), "security", "--offline=true", str(UNITS / unit)],
                            capture_output=True, text=True)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= target, result.stdout


def test_the_agent_runs_unprivileged_and_checks_before_starting():
    text = (UNITS / "vas-agent.service").read_text()
    for line in ("User=vas", "Group=vas", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n",
                 "ExecStartPre=/usr/local/bin/vas-agent --config /etc/vas/streams.yaml --check",
                 "Type=notify", "KillMode=mixed", "RuntimeDirectoryPreserve=yes", "ProtectProc=invisible"):
        assert line in text, line
    stop = int(re.search(r"^TimeoutStopSec=(\d+)$", text, re.M).group(1))
    assert stop > 5 + 10  # default drain_period + stop_timeout
