"""The agent judged as the service will run it (issue 18, items 8 and 9): ``--check`` as root
opens secrets as the service's user and reads the unit's environment file; an agent started by
hand without its runtime directory says what to do."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import BIN

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root (CI runs as root)")]
USER = "nobody"  # any unprivileged account: the service's own (vas) is covered by test_install_host


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory other users can enter (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="vas-check-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def check(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "vas-agent"), "--config", str(config), "--check", *args],
                          capture_output=True, text=True, timeout=60)


def write_config(d: Path) -> Path:
    config = d / "streams.yaml"
    config.write_text(f"version: 1\nnode: {{runtime_dir: {d}/run}}\nrecordings: {{root: {d}/rec}}\nstreams:\n"
                      f"  cam:\n    url: rtsp://u:${{file:{d}/secret}}@192.0.2.1/x\n"
                      "  lobby:\n    url: rtsp://u:${LOBBY_PASSWORD}@192.0.2.1/y\n")
    config.chmod(0o644)
    return config


def test_check_as_root_sees_the_service_users_access_and_environment(shared):
    config = write_config(shared)
    secret = shared / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)  # root's alone: the service user cannot read it
    env = shared / "environment"
    env.write_text("# the unit's EnvironmentFile=\nLOBBY_PASSWORD='pw with spaces'\n")
    env.chmod(0o600)

    out = check(config, "--user", USER, "--environment-file", str(env))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "LOBBY_PASSWORD" not in out.stderr  # the environment file was read
    assert (f"{config}:6: streams.cam.url: ${{file:{secret}}}: user {USER} cannot read it (mode 0600 root:root: "
            "Permission denied); the service (user nobody) would fail to start") in out.stderr
    assert "ok:" not in out.stdout

    secret.chmod(0o644)
    fixed = check(config, "--user", USER, "--environment-file", str(env))
    assert fixed.returncode == 0 and "ok:" in fixed.stdout, fixed.stderr

    config.chmod(0o600)  # the file itself
    unreadable = check(config, "--user", USER, "--environment-file", str(env))
    assert unreadable.returncode == 1 and f"{config}: user {USER} cannot read this file (mode 0600" in unreadable.stderr

    # Without the environment file, a variable only the service has is missing (as before).
    config.chmod(0o644)
    bare = subprocess.run([str(BIN / "vas-agent"), "--config", str(config), "--check"], capture_output=True,
                          text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "LOBBY_PASSWORD"})
    assert bare.returncode == 1 and "environment variable LOBBY_PASSWORD is not set" in bare.stderr


def test_started_by_hand_without_its_runtime_dir_it_says_what_to_do(shared):
    run_parent = shared / "run-parent"
    run_parent.mkdir(mode=0o755)  # root's: the service user cannot create run-parent/vas in it
    config = shared / "streams.yaml"
    config.write_text(f"version: 1\nnode: {{runtime_dir: {run_parent}/vas}}\nrecordings: {{root: {shared}/rec}}\n"
                      "streams: {}\n")
    config.chmod(0o644)
    agent = subprocess.run(["setpriv", "--reuid", USER, "--regid", "nogroup", "--clear-groups",
                            str(BIN / "vas-agent"), "--config", str(config)],
                           capture_output=True, text=True, timeout=60, cwd="/")
    assert agent.returncode == 1
    assert f"Permission denied: '{run_parent}/vas'" in agent.stderr
    assert "RuntimeDirectory=vas creates /run/vas" in agent.stderr
    assert f"install -d -o vas -g vas -m 0750 {run_parent}/vas" in agent.stderr


def test_check_from_the_configs_own_directory_and_a_secret_behind_a_closed_directory(shared):
    """``cd /etc/vas && vas-agent --config streams.yaml --check`` (root) finds the file although
    the probe runs in / (where the relative path is "No such file or directory"); a secret shut
    away by its directory is told to open the directory, not "chmod 0640 FILE", which would
    change nothing."""
    config = write_config(shared)
    closed = shared / "closed"
    closed.mkdir(mode=0o700)
    secret = closed / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)  # readable itself: only the directory shuts the user out
    config.write_text(config.read_text().replace(f"{shared}/secret", str(secret)))
    env = shared / "environment"
    env.write_text("LOBBY_PASSWORD=pw\n")
    relative = subprocess.run([str(BIN / "vas-agent"), "--config", "streams.yaml", "--check", "--user", USER,
                               "--environment-file", "environment"], cwd=shared, capture_output=True, text=True,
                              timeout=60)
    assert relative.returncode == 1
    assert "streams.yaml: user nobody cannot read this file" not in relative.stderr, relative.stderr
    assert (f"streams.yaml:6: streams.cam.url: ${{file:{secret}}}: user {USER} cannot read it (mode 0644 root:root: "
            f"Permission denied (directory {closed} is closed to it)); the service (user nobody) would fail to "
            f"start; e.g. chgrp {USER} {closed} && chmod g+x {closed}") in relative.stderr, relative.stderr
    closed.chmod(0o755)
    fixed = subprocess.run([str(BIN / "vas-agent"), "--config", "streams.yaml", "--check", "--user", USER,
                            "--environment-file", "environment"], cwd=shared, capture_output=True, text=True,
                           timeout=60)
    assert fixed.returncode == 0 and "ok: streams.yaml: 2 streams" in fixed.stdout, fixed.stderr


def test_a_missing_environment_file_asked_for_is_named_with_the_error_it_causes(shared):
    """``--environment-file`` with a wrong path is named, not silently replaced by the shell's
    environment; and the note on a missing or unreadable environment file is printed beside the
    "not set" it explains."""
    config = write_config(shared)
    (shared / "secret").write_text("s3cret\n")
    out = check(config, "--environment-file", str(shared / "no-such-file"))
    assert out.returncode == 1 and "environment variable LOBBY_PASSWORD is not set" in out.stderr
    assert f"note: {shared}/no-such-file: no such file: ${{NAME}} references use this shell's environment" \
        in out.stderr, out.stderr
    env = shared / "environment"
    env.write_text("LOBBY_PASSWORD=pw\n")
    env.chmod(0o600)
    unreadable = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                                 str(BIN / "vas-agent"), "--config", str(config), "--check", "--environment-file",
                                 str(env)], capture_output=True, text=True, timeout=60, env={
                                     k: v for k, v in os.environ.items() if k != "INVOCATION_ID"})
    assert unreadable.returncode == 1 and "LOBBY_PASSWORD is not set" in unreadable.stderr
    assert f"note: {env}: not read (Permission denied)" in unreadable.stderr, unreadable.stderr


def test_check_run_from_an_interpreter_the_user_cannot_run(shared, tmp_path):
    """Root checking with a venv the service user cannot enter (a checkout in /root, a stage in a
    0700 directory): the probe falls back to Debian's python3 instead of reporting "only root can
    switch users" for every file, with a chmod for each that would change nothing."""
    import sys
    import sysconfig
    config = write_config(shared)
    (shared / "secret").write_text("s3cret\n")
    env_file = shared / "environment"
    env_file.write_text("LOBBY_PASSWORD=pw\n")
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    python = closed / "python3"
    python.symlink_to(os.path.realpath(sys.executable))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                       sysconfig.get_paths()["purelib"]])}
    out = subprocess.run([str(python), "-c", "import sys; from agent.cli import agent_main; "
                          "sys.exit(agent_main(sys.argv[1:]))", "--config", str(config), "--check", "--user", USER,
                          "--environment-file", str(env_file)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0 and "only root can switch users" not in out.stderr, out.stderr
    assert f"ok: {config}: 2 streams" in out.stdout
