"""The exporter's systemd unit gives it the recordings read-only and nothing else of /var/lib
(issue 20: the console serves video); `systemd-analyze verify` and the exposure target are
checked for every unit by tests/unit/test_systemd_units.py."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "vas-exporter.service"


def settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        match = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if match:
            out.setdefault(match.group(1), []).append(match.group(2))
    return out


def test_the_exporter_reads_the_recordings_and_writes_nothing():
    unit = settings()
    assert unit["BindReadOnlyPaths"] == ["-/var/lib/vas/recordings"]
    assert unit["TemporaryFileSystem"] == ["/var/lib:ro"]  # the rest of /var/lib is not there at all
    assert unit["SupplementaryGroups"] == ["vas"] and unit["DynamicUser"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"] and unit["ProtectHome"] == ["yes"]
    for key in ("ReadWritePaths", "StateDirectory", "BindPaths", "CacheDirectory", "LogsDirectory"):
        assert key not in unit, key


def test_the_agent_writes_recordings_its_group_can_read():
    agent = (UNIT.parent / "vas-agent.service").read_text()
    assert "UMask=0027" in agent and "StateDirectoryMode=0750" in agent and "Group=vas" in agent


def test_systemd_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found (Debian: systemd)"
    text = UNIT.read_text().replace("/usr/local/bin/vas-exporter", shutil.which("true") or "/bin/true")
    (tmp_path / UNIT.name).write_text(text)
    result = subprocess.run([analyze, "verify", str(tmp_path / UNIT.name)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
