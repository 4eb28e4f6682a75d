"""The descriptor limit with the real vas-agent: 500 streams under systemd's default soft
limit, and ``--check``'s warning when the streams cannot fit it."""
from __future__ import annotations

import resource
import subprocess

import psutil
import pytest

from .harness import BIN, IDLE, NO_RECORDING, config, wait_for

pytestmark = pytest.mark.integration


def _nofile_prefix() -> tuple[tuple[str, ...], int]:
    """prlimit as systemd sets it (1024 soft / 524288 hard), or 1024 / our hard limit
    where this sandbox may not raise the hard limit."""
    hard = 524288
    probe = subprocess.run(["prlimit", f"--nofile=1024:{hard}", "true"], capture_output=True)
    if probe.returncode != 0:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ("prlimit", f"--nofile=1024:{hard}"), hard


@pytest.mark.slow
def test_500_streams_fit_under_systemds_default_soft_limit(agent_factory):
    prefix, hard = _nofile_prefix()
    assert hard >= 2500, "the hard limit itself is too low to prove anything"
    streams = {f"s{i:03d}": {"command": IDLE} for i in range(500)}
    agent = agent_factory(config(streams, **NO_RECORDING)).start(prefix=prefix)
    ids = list(streams)
    states = wait_for(lambda: (s := agent.streams()) and all(s[i]["state"] == "live" for i in ids) and s,
                      120, "500 live streams")
    assert not any("Too many open files" in " ".join(s["last_error"]) for s in states.values())
    limits = psutil.Process(agent.proc.pid).rlimit(psutil.RLIMIT_NOFILE)
    assert limits == (hard, hard)  # the soft limit was raised to the hard one
    assert agent.stop(timeout=60) == 0


def test_check_warns_when_streams_cannot_fit_the_limit(agent_factory):
    agent = agent_factory(config({f"s{i}": {"command": IDLE} for i in range(300)}, **NO_RECORDING))
    out = subprocess.run(["prlimit", "--nofile=512:512", str(BIN / "vas-agent"),
                          "--config", str(agent.config_path), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "300 enabled streams need about 1264 file descriptors but the limit is 512" in out.stderr
