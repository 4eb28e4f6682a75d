"""Which version runs where (issue 18, item 6): the checkout's tag and commit in every command's
--version, in vas_build_info{version,commit} and in /v2/health/system, from a real agent and
exporter; and the version string for tags, distances and edits."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.version import describe
from camera.fixture import free_port

from .harness import BIN, CHEAP, AgentProcess, config, wait_for
from .test_exporter import Exporter, http

pytestmark = pytest.mark.integration
CHECKOUT = Path(__file__).resolve().parents[2]


def checkout_build() -> tuple[str, str]:
    """What git says about this checkout, asked independently of agent.version."""
    commit = subprocess.run(["git", "-c", "safe.directory=*", "rev-parse", "HEAD"], cwd=CHECKOUT,
                            capture_output=True, text=True).stdout.strip()
    return commit[:7], commit


@pytest.mark.slow
def test_every_command_metrics_and_api_name_the_checkouts_commit(agent_factory, tmp_path):
    short, commit = checkout_build()
    if not commit:
        pytest.fail("not a git checkout: this test checks the version git gives (run it in a clone)", pytrace=False)
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


def installed_copy(where: Path, version: str) -> Path:
    """agent/ and exporter/ as install.sh leaves them: with ``_build.py`` naming ``version``."""
    for pkg in ("agent", "exporter"):
        shutil.copytree(CHECKOUT / pkg, where / pkg, ignore=shutil.ignore_patterns("__pycache__", "_build.py"))
    stamp(where, version)
    return where


def stamp(where: Path, version: str) -> None:
    (where / "agent/_build.py").write_text(f"VERSION = {version!r}\nCOMMIT = {version * 8!r}\n")


@pytest.mark.slow
def test_an_upgrade_in_place_does_not_rename_the_running_processes(tmp_path):
    """install.sh replaces /opt/vas/src while the agent and exporter run (a failed restart, a
    container, by hand): each process must keep naming the code it loaded, and the agent's own
    version must be visible at all (before: the exporter read the new _build.py at its first
    scrape, and the agent's version was nowhere but in its --version)."""
    copy = installed_copy(tmp_path / "opt", "1.0.0")
    port = free_port()
    cfg = config({"cam": {**CHEAP}})
    cfg["exporter"] = {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp_path / "tokens")}
    env = {"PYTHONPATH": str(copy)}
    (tmp_path / "node").mkdir()
    agent = AgentProcess(tmp_path / "node", cfg, env=env).start()
    exporter = None
    try:
        with open(tmp_path / "exporter.log", "ab") as fh:
            exporter = subprocess.Popen([str(BIN / "vas-exporter"), "--config", str(agent.config_path)],
                                        stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **env})
        wait_for(lambda: http(port, "/livez")[0] == 200, 15, "the exporter")
        stamp(copy, "2.0.0")  # the upgrade lands; nothing has been scraped yet
        assert agent.snapshot()["agent"]["version"] == "1.0.0"
        system = json.loads(http(port, "/v2/health/system")[1])
        assert system["agent"]["version"] == "1.0.0" and system["agent"]["commit"] == "1.0.0" * 8
        assert system["build"]["version"] == "1.0.0", system["build"]
        assert 'version="1.0.0"' in http(port, "/v2/metrics")[1]
    finally:
        if exporter is not None:
            exporter.terminate()
            exporter.wait(10)
        agent.stop()


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


@pytest.mark.slow
def test_a_new_untracked_module_makes_the_version_dirty(tmp_path):
    """A module added but not yet committed makes the version ``+dirty``: install.sh installs it
    (its code hash counts it), so without the mark the printed version would name code that is not
    the commit's.  Ignored files (``__pycache__``, ``_build.py``) do not count."""
    repo = tmp_path / "checkout"
    for part in ("agent", "exporter"):
        shutil.copytree(CHECKOUT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__", "_build.py"))
    shutil.copy(CHECKOUT / "pyproject.toml", repo)
    (repo / ".gitignore").write_text("__pycache__/\nagent/_build.py\n")
    git = ["git", "-c", "safe.directory=*", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "base"]):
        subprocess.run([*git, *args], check=True, timeout=60)
    env = {**os.environ, "PYTHONPATH": str(repo)}

    def version() -> str:
        return subprocess.run(["python3", "-m", "agent.version"], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=60).stdout.split()[0]
    assert not version().endswith("dirty"), version()
    assert not version().endswith("dirty"), version()  # the first run's __pycache__ is ignored
    (repo / "agent/new_feature.py").write_text("X = 1\n")
    assert version().endswith(".dirty"), version()
