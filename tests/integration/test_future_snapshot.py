"""A snapshot dated ahead of the clock proves nothing about the agent being alive.

A backward wall-clock step (NTP correcting a fast clock) just after the agent died or
froze leaves ``state.json`` with an mtime in the future: an age of ``now - mtime``
is negative, and readers that clamp it to 0 called a dead agent live for as long as
the step.  Real agent (SIGKILL / SIGSTOP), real exporter process, real vasctl.
"""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from .harness import config, wait_for
from .test_exporter import Exporter, http
from .test_truthful_status import CHEAP_REC, IDS, _metric, _node

pytestmark = [pytest.mark.integration, pytest.mark.slow]
AHEAD = 3600.0  # the snapshot dated an hour ahead: a one-hour backward step


def _date_ahead(agent) -> None:
    path = agent.runtime_dir / "state.json"
    os.utime(path, (time.time() + AHEAD,) * 2)


def test_a_snapshot_dated_ahead_of_the_clock_does_not_keep_a_dead_agent_live(agent_factory, tmp_path):
    from agent import tokens
    agent, port = _node(agent_factory, tmp_path, {i: dict(CHEAP_REC) for i in IDS})
    admin = tokens.add(tmp_path / "tokens", "ops", "admin")
    agent.wait_all("live", IDS)
    exporter = Exporter(agent, port)
    try:
        _date_ahead(agent)  # a live agent touches it again within a second: still live
        status = agent.vasctl("status")
        assert status.returncode == 0, status.stdout + status.stderr
        agent.signal(signal.SIGSTOP)  # frozen, then the clock steps back
        try:
            _date_ahead(agent)
            time.sleep(3 + 2)  # stale_after 3 s, and 2 s more
            body = json.loads(http(port, "/v2/health/streams/cam1")[1])
            assert body["state"] == "unknown" and body["up"] is False and body["stale"] is True, body
            text = http(port, "/v2/metrics")[1]
            assert _metric(text, "vas_agent_up ") == "0.0"
            assert all(_metric(text, f'vas_stream_up{{stream="{i}"}}') == "0.0" for i in IDS)
            assert http(port, "/readyz")[0] == 503
            started = time.monotonic()
            code, answer = http(port, "/v2/health/consumers/c1/heartbeat", method="POST", token=admin)
            assert code == 503 and json.loads(answer)["applied"] is False, answer  # never sent to a frozen agent
            assert time.monotonic() - started < 1.0
            status = agent.vasctl("status")
            assert status.returncode == 1 and "unknown (was live)" in status.stdout, status.stdout + status.stderr
        finally:
            agent.signal(signal.SIGCONT)
        wait_for(lambda: json.loads(http(port, "/v2/health/streams/cam1")[1])["state"] == "live", 10,
                 "live again once the agent touches its snapshot")
        agent.kill()
        _date_ahead(agent)
        time.sleep(3 + 2)
        body = json.loads(http(port, "/v2/health/streams/cam1")[1])
        assert body["state"] == "unknown" and body["stale"] is True, body
        assert agent.vasctl("status").returncode == 1
    finally:
        exporter.stop()


def test_a_reload_sent_to_a_frozen_agent_fails_quickly_and_is_never_applied(agent_factory, tmp_path):
    # `systemctl reload vas-agent` runs `vasctl reload`: its failure must mean "not applied",
    # not "applied later, when the agent resumes" (issue 16, item 17's class, for reloads).
    import subprocess
    agent = agent_factory(config({"cam1": dict(CHEAP_REC)})).start()
    agent.wait_all("live", ["cam1"])
    agent.signal(signal.SIGSTOP)
    try:
        agent.write_config(config({"cam1": dict(CHEAP_REC), "cam2": dict(CHEAP_REC)}))
        started = time.monotonic()
        try:
            out = agent.vasctl("reload", timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("vasctl reload hung on a frozen agent")
        took = time.monotonic() - started
        assert out.returncode == 1 and "not applied" in out.stderr, out.stdout + out.stderr
        assert took < 10, took
    finally:
        agent.signal(signal.SIGCONT)
    wait_for(lambda: "dropped: read after its caller's deadline" in agent.log(), 10,
             "the agent to read and drop the late reload")
    time.sleep(1)
    assert "cam2" not in agent.streams(), "a reload that answered 'not applied' was applied"
