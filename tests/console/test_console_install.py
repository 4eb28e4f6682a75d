"""The console's files reach a host install (they are package data, not Python: a plain
``pip install`` would leave them out and the installed exporter would answer 404 at ``/``)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

#: A host install is minutes of work beside the other workers (as in test_install.py): the suite's 120 s
#: hang bound is too short for it; the install's own subprocess timeout still catches a hang.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]
CHECKOUT = Path(__file__).resolve().parents[2]
FILES = ("index.html", "app.js", "app.css", "vendor/hls.min.js", "vendor/LICENSE")


def test_a_host_install_carries_the_console_files(tmp_path):
    root = tmp_path / "root"
    result = subprocess.run(["bash", str(CHECKOUT / "install.sh"), "--root", str(root)], cwd=CHECKOUT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    installed = next((root / "opt/vas/venv/lib").glob("python3*/site-packages/exporter"))
    for name in FILES:
        assert (installed / "console" / name).read_bytes() == (CHECKOUT / "exporter/console" / name).read_bytes()
