"""Which version runs where (issue 18, item 6): the checkout's tag and commit in every command's
--version, in vas_build_info{version,commit} and in /v2/health/system, from a real agent and
exporter; and the version string for tags, distances and edits."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agent.version import describe
from camera.fixture import free_port

from .harness import BIN, CHEAP, config
from .test_exporter import Exporter, http

pytestmark = pytest.mark.integration
CHECKOUT = Path(__file__).resolve().parents[2]


def checkout_build() -> tuple[str, str]:
    """What git says about this checkout, asked independently of agent.version."""
    commit = subprocess.run(["git", "-c", "safe.directory=*", "rev-parse", "HEAD"], cwd=CHECKOUT,
                            capture_output=True, text=True).stdout.strip()
    return commit[:7], commit


def test_every_command_metrics_and_api_name_the_checkouts_commit(agent_factory, tmp_path):
    short, commit = checkout_build()
    if not commit:
        pytest.skip("not a git checkout")
    lines = {cmd: subprocess.run([str(BIN / cmd), "--version"], capture_output=True, text=True, timeout=30)
             for cmd in ("vas-agent", "vasctl", "vas-exporter")}
    assert all(p.returncode == 0 for p in lines.values()), {c: p.stderr for c, p in lines.items()}
    versions = {p.stdout.split()[1] for p in lines.values()}
    assert len(versions) == 1 and (f"g{short}" in (v := versions.pop()) or "+" not in v)  # untagged: +g<commit>
    for cmd, p in lines.items():
        assert p.stdout.startswith(f"{cmd} ") and p.stdout.endswith(f" (commit {commit})\n"), p.stdout
    version = lines["vas-agent"].stdout.split()[1]

    port = free_port()
    cfg = config({"cam": {**CHEAP}})
    cfg["exporter"] = {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp_path / "tokens")}
    agent = agent_factory(cfg).start()
    agent.wait_state("cam", "live")
    exporter = Exporter(agent, port)
    try:
        metrics = http(port, "/v2/metrics")[1]
        assert f'vas_build_info{{commit="{commit}",version="{version}"}} 1.0' in metrics, metrics
        system = json.loads(http(port, "/v2/health/system")[1])
        assert system["build"] == {"version": version, "commit": commit}
    finally:
        exporter.stop()


@pytest.mark.parametrize(("tag", "distance", "dirty", "expected"), [
    ("v1.2.0", 0, False, "1.2.0"),
    ("v1.2.0", 3, False, "1.2.0+3.gabc1234"),
    ("1.2.0", 0, True, "1.2.0+dirty"),
    (None, 0, False, "0.1.0+gabc1234"),
    (None, 0, True, "0.1.0+gabc1234.dirty"),
    ("vnext", 0, False, "vnext"),
])
def test_version_string_from_tag_distance_and_edits(tag, distance, dirty, expected):
    assert describe(tag, distance, "abc1234" + "0" * 33, dirty, "0.1.0") == expected
