"""Stopping the agent: the drain before any stream is signalled, a second SIGTERM that skips
it, and every stream stopped gracefully (SIGTERM, not PDEATHSIG) when the runtime directory
was removed or is full, the snapshot cannot be written, or a reload hangs reading a file."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent.agent import Agent
from agent.config import model as config_mod
from agent.config.model import StreamConfig
from agent.interface import ReloadInProgress
from agent.supervise.states import StreamState

from .harness import BIN, NO_RECORDING, TRAPS_TERM, alive, children, config, fill, wait_for
from .test_stream import REPORT_THEN_HANG, stream_config, wait_until

pytestmark = pytest.mark.integration


def agent_config(tmp_path: Path, streams: dict[str, StreamConfig]) -> config_mod.Config:
    return config_mod.Config(path=tmp_path / "streams.yaml", sha256="x",
                             node=config_mod.NodeConfig(runtime_dir=tmp_path / "run", drain_period=0),
                             recordings_root=tmp_path / "rec", streams=streams)


async def test_close_abandons_a_reload_stuck_reading_and_starts_nothing(tmp_path):
    entered, release = threading.Event(), threading.Event()
    cam = stream_config(REPORT_THEN_HANG)
    newer = agent_config(tmp_path, {"cam": cam, "extra": dataclasses.replace(cam, id="extra")})

    def hung_loader(path, env):  # a ${file:} secret on a hung mount
        entered.set()
        release.wait(30)
        return newer

    before = {p.pid for p in children(os.getpid(), recursive=True)}  # this worker's lent camera
    agent = Agent(agent_config(tmp_path, {"cam": cam}), loader=hung_loader)
    await agent.start()
    try:
        await wait_until(lambda: agent.streams["cam"].state is StreamState.LIVE, 5, "live")
        reload = asyncio.create_task(agent.reload())
        await wait_until(entered.is_set, 5, "the reload to start reading")
        await asyncio.wait_for(agent.close(), 10)  # used to wait for the reader forever
        with pytest.raises(ReloadInProgress):
            await reload
    finally:
        release.set()
        await agent.close()
    await asyncio.sleep(0.3)
    assert "extra" not in agent.streams
    assert [p for p in children(os.getpid(), recursive=True) if p.pid not in before] == []


async def test_close_stops_streams_gracefully_when_the_snapshot_cannot_be_written(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    trap = ("/bin/sh", "-c", "trap 'exit 7' TERM; printf 'frame=1\\nprogress=continue\\n'; "
            "while :; do sleep 0.1; done", "{progress}")
    agent = Agent(agent_config(tmp_path, {"cam": stream_config(trap)}))
    await agent.start()
    await wait_until(lambda: agent.streams["cam"].state is StreamState.LIVE, 5, "live")
    agent.snapshot_path.unlink()
    agent.snapshot_path.mkdir()  # every write now fails (EISDIR on the rename)
    await asyncio.wait_for(agent.close(), 10)
    assert "stopped: cam (exit status 7; stopping)" in caplog.text  # SIGTERM, not PDEATHSIG
    assert "cannot write snapshot" in caplog.text


@pytest.mark.slow
def test_a_removed_runtime_dir_comes_back_and_shutdown_is_graceful(agent_factory):
    agent = agent_factory(config({"cam": {"command": TRAPS_TERM}}, **NO_RECORDING)).start()
    pid = agent.wait_state("cam", "live")["pid"]
    shutil.rmtree(agent.runtime_dir)
    wait_for(lambda: agent.snapshot()["agent"]["status"] == "running", 5, "state.json to come back")
    wait_for(lambda: (agent.runtime_dir / "agent.sock").exists(), 5, "the control socket to come back")
    status = agent.vasctl("status")
    assert status.returncode == 0 and "live" in status.stdout, status.stderr
    reload = agent.vasctl("reload")
    assert reload.returncode == 0 and "unchanged: 1" in reload.stdout, reload.stderr
    age = time.time() - (agent.runtime_dir / "state.json").stat().st_mtime
    assert age < 2.5  # the heartbeat goes on
    shutil.rmtree(agent.runtime_dir)
    assert agent.stop() == 0
    assert "stopped: cam (exit status 7; stopping)" in agent.log() and not alive(pid)


def test_an_emptied_runtime_dir_gets_its_control_socket_and_lock_back(agent_factory):
    # `rm /run/vas/*` (the directory stays): the snapshot comes back with the next flush, so its
    # absence alone cannot be what notices; the socket and the lock did not come back (vasctl
    # could not reach the agent, and a second agent could start beside it).
    flapping = {"command": ["/bin/sh", "-c", "sleep 0.05; exit 1"], "restart": {
        "initial_delay": "0.05s", "multiplier": 1.5, "max_delay": "1s", "jitter": 0, "stable_after": "60s"}}
    agent = agent_factory(config({"cam": {"command": TRAPS_TERM}, "flap": flapping}, **NO_RECORDING)).start()
    agent.wait_state("cam", "live")
    for name in os.listdir(agent.runtime_dir):
        (agent.runtime_dir / name).unlink()
    wait_for(lambda: (agent.runtime_dir / "agent.sock").exists(), 5, "the control socket to come back")
    status = agent.vasctl("status")
    assert status.returncode == 0 and "live" in status.stdout, status.stderr
    second = subprocess.Popen([str(BIN / "vas-agent"), "--config", str(agent.config_path)],
                              stderr=subprocess.PIPE, text=True)
    try:
        _, err = second.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        second.kill()
        _, err = second.communicate()
    assert second.returncode == 1 and "another vas-agent" in err, err
    assert agent.stop() == 0


def test_a_full_runtime_filesystem_does_not_skip_the_graceful_stop(agent_factory, tmp_path):
    agent = agent_factory(config({"cam": {"command": TRAPS_TERM}}, **NO_RECORDING))
    agent.runtime_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(agent.runtime_dir)], check=True)
    try:
        agent.start()
        agent.wait_state("cam", "live")
        fill(agent.runtime_dir)  # ENOSPC from here on
        assert agent.stop() == 0
        assert "stopped: cam (exit status 7; stopping)" in agent.log()
        assert "cannot write snapshot" in agent.log()
    finally:
        agent.kill()
        subprocess.run(["umount", "-l", str(agent.runtime_dir)], check=False)


@pytest.mark.slow
def test_drain_reports_not_ready_before_any_stream_is_signalled(agent_factory):
    cfg = config({"cam": {"command": TRAPS_TERM}}, **NO_RECORDING)
    cfg["node"] = {"drain_period": "2s"}
    agent = agent_factory(cfg).start()
    pid = agent.wait_state("cam", "live")["pid"]
    agent.signal(signal.SIGTERM)
    wait_for(lambda: agent.snapshot()["agent"]["status"] == "draining", 2, "draining")
    assert alive(pid) and agent.streams()["cam"]["state"] == "live"
    time.sleep(1.0)
    assert alive(pid)  # still within the drain period
    assert agent.proc.wait(10) == 0
    assert "stopped: cam (exit status 7; stopping)" in agent.log()


def test_a_second_sigterm_skips_the_drain(agent_factory):
    cfg = config({"cam": {"command": TRAPS_TERM}}, **NO_RECORDING)
    cfg["node"] = {"drain_period": "60s"}
    agent = agent_factory(cfg).start()
    agent.wait_state("cam", "live")
    agent.signal(signal.SIGTERM)
    wait_for(lambda: agent.snapshot()["agent"]["status"] == "draining", 2, "draining")
    started = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.proc.wait(15) == 0 and time.monotonic() - started < 10


