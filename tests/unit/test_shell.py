"""The shell scripts pass shellcheck (following what install.sh sources)."""
from __future__ import annotations

import shutil
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
