"""The shell scripts pass shellcheck (following what install.sh sources)."""
from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["install.sh", ".ci/run", "bench/fake_ffmpeg.sh", "config/update-constraints.sh",
                                    "tests/integration/hostns.sh"])
def test_shellcheck_is_clean(script):
    tool = shutil.which("shellcheck")
    if tool is None:
        pytest.fail("shellcheck not found (Debian: shellcheck; ./install.sh --dev installs it)", pytrace=False)
    result = subprocess.run([tool, "-x", script], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_help_says_root_is_a_test_fixture_not_an_image():
    """Issue 18 item 2: --root creates the vas account on this host and links into /opt/vas,
    so its tree must not be copied to another machine; --help says so plainly."""
    out = subprocess.run(["bash", "install.sh", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    text = " ".join(out.stdout.split())
    assert out.returncode == 0 and "--root D a test fixture, not a way to build an image" in text, out.stdout


@pytest.mark.parametrize("args", [["--wheelhouse", "WH", "--demo"], ["--wheelhouse", "WH", "--with-sfu", "--demo"]])
def test_wheelhouse_with_another_mode_is_refused_in_either_order(args, tmp_path):
    """--wheelhouse D --demo ran the demo (the wheelhouse dropped without a word).  The demo's port is
    held here so that a script which does start the demo stops at its port check, installing nothing."""
    args = [str(tmp_path / "wh") if a == "WH" else a for a in args]
    with socket.socket() as held:
        with contextlib.suppress(OSError):
            held.bind(("127.0.0.1", 8080))
            held.listen()
        out = subprocess.run(["bash", "install.sh", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "--wheelhouse only builds wheels" in out.stderr, out.stdout + out.stderr
    assert not (tmp_path / "wh").exists()
