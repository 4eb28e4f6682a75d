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
