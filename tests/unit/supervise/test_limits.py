"""Process limits: the descriptors the streams need against RLIMIT_NOFILE, and glibc's malloc arenas."""
from __future__ import annotations

import os

from agent.supervise.limits import fd_warning, fds_needed


def test_fd_budget():
    assert fds_needed(500) > 1500
    assert fd_warning(500, 1024) is not None and "LimitNOFILE" in fd_warning(500, 1024)
    assert fd_warning(500, 524288) is None


def test_malloc_arenas_are_capped_unless_the_environment_says():
    """A fresh interpreter (no thread has allocated yet), as vas-agent's main() is."""
    import subprocess
    import sys
    probe = "from agent.supervise.limits import limit_malloc_arenas as f; print(f())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "True"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**env, "MALLOC_ARENA_MAX": "4"})
    assert out.stdout.strip() == "False"
