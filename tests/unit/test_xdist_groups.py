"""The suite's ``xdist_group`` marks keep a module's tests on one worker (its module-scoped node is
built once): checked on a two-test project with the installed pytest and pytest-xdist, because a
pytest upgrade once made ``--dist loadgroup`` ignore them without a word (pytest-xdist#1386)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

PROJECT = '''
import pytest
pytestmark = pytest.mark.xdist_group("together")
@pytest.mark.parametrize("i", range(6))
def test_one(i):
    pass
'''


@pytest.mark.heavy  # three interpreters: handed out mid-run, not last, where it ran alone
def test_an_xdist_group_runs_on_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(PROJECT)
    # Only xdist: every other installed plugin would be loaded by the run and each of its workers.
    plain = ["-p", "xdist", "-p", "no:cacheprovider", "-c", "/dev/null"]
    run = subprocess.run([sys.executable, "-m", "pytest", *plain, "-n", "2", "--dist", "loadgroup", "-v",
                          "--rootdir", str(tmp_path), str(tmp_path)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    workers = set(re.findall(r"^\[(gw\d+)\].*PASSED", run.stdout, re.M))
    assert len(re.findall(r"PASSED", run.stdout)) == 6 and len(workers) == 1, run.stdout
