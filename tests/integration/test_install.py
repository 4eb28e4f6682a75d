"""install.sh on a host, into a staging root: the tree (the console's files and, with --with-sfu, the
reference SFU too), modes and owners; a second run changes nothing; an upgrade keeps the operator's
files; uninstall keeps config and recordings."""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

#: install.sh --root makes user and group vas on THIS host unless they exist: host_vas_account
#: (tests/conftest.py) makes them first, so that two installs at once never race to create them.
#: Installs create venvs and install wheels: minutes on a loaded 2-core machine; the suite's 120 s
#: hang bound is too short for that work, and each install's own subprocess timeout catches a hang.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("host_vas_account"),
              pytest.mark.timeout(900)]
CHECKOUT = Path(__file__).resolve().parents[2]
PARTS = ("agent", "exporter", "config", "systemd", "sfu", "pyproject.toml", "constraints.txt", "README.md",
         "install.sh")
CONSOLE_FILES = ("index.html", "app.js", "app.css", "vendor/hls.min.js", "vendor/LICENSE")


def copy_checkout(dest: Path) -> Path:
    """A second checkout in ``dest``: the parts of this one that install.sh needs."""
    dest.mkdir()
    for part in PARTS:
        src = CHECKOUT / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / part)
    return dest


def run(checkout: Path, *args: str) -> str:
    result = subprocess.run(["bash", str(checkout / "install.sh"), *args], cwd=checkout, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def owner(path: Path) -> tuple[str, str, str]:
    st = path.lstat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, oct(stat.S_IMODE(st.st_mode))


def assert_console_files_installed(root: Path) -> None:
    """The console's files reach a host install (they are package data, not Python: a plain
    ``pip install`` would leave them out and the installed exporter would answer 404 at ``/``)."""
    installed = next((root / "opt/vas/venv/lib").glob("python3*/site-packages/exporter"))
    for name in CONSOLE_FILES:
        assert (installed / "console" / name).read_bytes() == (CHECKOUT / "exporter/console" / name).read_bytes()


def assert_reference_sfu_runs(root: Path, out: str) -> None:
    """``--with-sfu`` installed the reference SFU, its unit and node_modules, and said how to use it;
    the installed app, with its own node_modules (real mediasoup), answers as the contract says."""
    from camera.fixture import free_port
    from tests.sfu.real_sfu import healthy

    app = root / "opt/vas/sfu"
    assert (app / "server.js").read_text() == (CHECKOUT / "sfu/server.js").read_text()
    assert os.access(app / "node_modules/mediasoup/worker/out/Release/mediasoup-worker", os.X_OK)
    unit = root / "etc/systemd/system/vas-sfu.service"
    assert unit.read_text() == (CHECKOUT / "systemd/vas-sfu.service").read_text()
    assert "mediasoup: {api_url: http://127.0.0.1:3000}" in out and "mediasoup: {command:" in out

    port = free_port()
    proc = subprocess.Popen([shutil.which("node") or "node", str(app / "server.js"), "--port", str(port)],
                            cwd=app, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if healthy(port):
                break
            assert proc.poll() is None, "the installed reference SFU exited"
            subprocess.run(["sleep", "0.1"])
        assert healthy(port)
    finally:
        proc.terminate()
        proc.wait(10)


def test_install_with_sfu_second_run_upgrade_and_uninstall(tmp_path):
    """One staging root through an install's life: a first install with ``--with-sfu`` (the tree,
    modes, owners, the console's files, the reference SFU on real mediasoup), a second run that
    changes nothing, an upgrade from a newer checkout that keeps the operator's files, and the
    uninstall (the SFU's unit and app go too).  One root for all of it: every fresh install is a
    venv and a full pip resolve, minutes beside the other workers."""
    root = tmp_path / "root"
    out = run(CHECKOUT, "--root", str(root), "--with-sfu")
    assert_console_files_installed(root)
    assert "created" in out and "first admin token, shown only now" in out
    assert owner(root / "etc/vas") == ("root", "vas", "0o750")
    assert owner(root / "etc/vas/streams.yaml") == ("root", "vas", "0o640")
    assert owner(root / "etc/vas/tokens") == ("root", "vas", "0o640")
    assert owner(root / "var/lib/vas/recordings") == ("vas", "vas", "0o750")
    for unit in ("vas-agent.service", "vas-exporter.service"):
        assert (root / "etc/systemd/system" / unit).read_text() == (CHECKOUT / "systemd" / unit).read_text()
    for cmd in ("vas-agent", "vasctl", "vas-exporter"):
        assert os.readlink(root / "usr/local/bin" / cmd) == f"/opt/vas/venv/bin/{cmd}"
    check = subprocess.run([str(root / "opt/vas/venv/bin/vas-agent"), "--config", str(root / "etc/vas/streams.yaml"),
                            "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "not started" in out  # no systemd for a staging root
    assert_reference_sfu_runs(root, out)

    again = run(CHECKOUT, "--root", str(root), "--with-sfu")
    assert "nothing to do" in again and "changed" not in again.lower().replace("nothing to do", "")

    # The operator's files, then a newer checkout.
    mine = "version: 1\nstreams: {cam: {url: 'rtsp://10.0.0.9/x'}}\n"
    (root / "etc/vas/streams.yaml").write_text(mine)
    tokens = (root / "etc/vas/tokens").read_text()
    (root / "var/lib/vas/recordings/cam").mkdir()
    (root / "var/lib/vas/recordings/cam/x.ts").write_bytes(b"keep")
    newer = copy_checkout(tmp_path / "newer")
    with open(newer / "agent/__init__.py", "a") as fh:
        fh.write("# a newer checkout\n")
    upgraded = run(newer, "--root", str(root))
    assert "code: installed" in upgraded and "kept your /etc/vas/streams.yaml" in upgraded
    installed = next((root / "opt/vas/venv/lib").glob("python3*/site-packages/agent/__init__.py"))
    assert "a newer checkout" in installed.read_text()
    assert (root / "etc/vas/streams.yaml").read_text() == mine
    assert (root / "etc/vas/tokens").read_text() == tokens
    assert (root / "var/lib/vas/recordings/cam/x.ts").read_bytes() == b"keep"

    gone = run(CHECKOUT, "--uninstall", "--root", str(root))
    assert "kept /etc/vas" in gone
    assert not (root / "opt/vas").exists() and not (root / "etc/systemd/system/vas-agent.service").exists()
    assert not (root / "etc/systemd/system/vas-sfu.service").exists() and not (root / "opt/vas/sfu").exists()
    assert not (root / "usr/local/bin/vasctl").is_symlink()
    assert (root / "etc/vas/streams.yaml").read_text() == mine
    assert (root / "var/lib/vas/recordings/cam/x.ts").exists()
