"""``{root}/.vas/retention.json`` (each stream's last retention, for its orphans) is read and
written only below the root, never through a symlink, and a damaged one loses no footage.

Anyone who may write into the recordings root (FFmpeg's user, an operator's script) can
plant a symlink at the memory's fixed temporary name or at ``.vas``; the agent must
neither overwrite a file elsewhere through it nor keep its memory outside the root.
Real agent, real files.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from .harness import config, wait_for

pytestmark = pytest.mark.integration
DAY = 86400.0
CHEAP = {"command": ["tail", "-F", "-s", "60", "{recording_dir}/.alive"], "ready_after": "0.5s",
         "stall_timeout": 0}


def plant(path: Path, days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 100)
    os.utime(path, (time.time() - days * DAY,) * 2)
    return path


def indexed(agent, sid: str, name: str) -> bool:
    """Whether the agent's index holds ``name`` (of a segment old enough to go): a dry-run cleanup
    plans from the index, so it lists the file once the watcher has seen it."""
    out = agent.vasctl("cleanup", sid, "--dry-run", "--json")
    return out.returncode == 0 and f'{name}"' in out.stdout


def _started(agent_factory, **recordings):
    agent = agent_factory({**config({"cam": {**CHEAP, "recording": {"retention": "30d"}}}),
                           "recordings": {"orphan_retention": "7d", **recordings}})
    return agent


@pytest.mark.slow
def test_a_symlink_at_the_memory_s_temporary_name_overwrites_nothing(agent_factory, tmp_path):
    agent = _started(agent_factory)
    victim = tmp_path / "precious.conf"
    victim.write_text("precious\n")
    (agent.recordings / ".vas").mkdir(parents=True)
    (agent.recordings / ".vas" / ".retention.json.tmp").symlink_to(victim)
    expired = plant(agent.recordings / "cam" / "cam_40.ts", 40)
    plant(agent.recordings / "cam" / "cam_1.ts", 1)  # the newest of a running stream always stays
    agent.start()
    agent.wait_all("live", ["cam"])
    wait_for(lambda: not expired.exists(), 20, "the start's retention pass (after the memory was saved)")
    assert victim.read_text() == "precious\n", "the agent wrote through a planted symlink"
    saved = json.loads((agent.recordings / ".vas" / "retention.json").read_text())
    assert saved["streams"] == {"cam": 30 * DAY}
    assert not (agent.recordings / ".vas" / "retention.json").is_symlink()


def test_a_symlinked_memory_folder_is_neither_read_nor_written(agent_factory, tmp_path):
    agent = _started(agent_factory)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "retention.json").write_text(json.dumps({"streams": {"old": 0}}))
    agent.recordings.mkdir(parents=True)
    (agent.recordings / ".vas").symlink_to(elsewhere)
    expired = plant(agent.recordings / "cam" / "cam_40.ts", 40)
    plant(agent.recordings / "cam" / "cam_1.ts", 1)  # the newest of a running stream always stays
    orphan = plant(agent.recordings / "old" / "old_10.ts", 10)  # "old" kept for ever only per the planted file
    agent.start()
    agent.wait_all("live", ["cam"])
    wait_for(lambda: not expired.exists(), 20, "the start's retention pass")
    assert json.loads((elsewhere / "retention.json").read_text()) == {"streams": {"old": 0}}, \
        "the memory was rewritten outside the root"
    assert ".vas is a symlink" in agent.log() or ".vas is not a directory" in agent.log(), agent.log()[-2000:]
    assert not orphan.exists()  # the planted memory was not believed: orphan_retention applied


@pytest.mark.slow
def test_a_damaged_memory_keeps_the_orphans_it_may_have_named_and_is_kept_aside(agent_factory):
    agent = _started(agent_factory)
    (agent.recordings / ".vas").mkdir(parents=True)
    damaged = b'{"streams": {"lobby": 0, "hall": 7776000\xff'  # torn and not UTF-8
    (agent.recordings / ".vas" / "retention.json").write_bytes(damaged)
    expired = plant(agent.recordings / "cam" / "cam_40.ts", 40)
    plant(agent.recordings / "cam" / "cam_1.ts", 1)  # the newest of a running stream always stays
    lobby = plant(agent.recordings / "lobby" / "lobby_30.ts", 30)  # an orphan the damaged file named
    agent.start()
    agent.wait_all("live", ["cam"])
    wait_for(lambda: not expired.exists(), 20, "the start's retention pass")
    assert lobby.exists(), "a damaged memory let an orphan go at orphan_retention"
    assert (agent.recordings / ".vas" / "retention.json.damaged").read_bytes() == damaged
    assert "kept for ever" in agent.log()
    agent.stop()
    agent.start()  # the next start must not forget: the orphans found then are remembered as kept
    agent.wait_all("live", ["cam"])
    # Planted outside the root then moved in: the watcher indexes it with its old mtime.
    again = plant(agent.recordings / "cam_41.ts.part", 41).rename(agent.recordings / "cam" / "cam_41.ts")
    agent.vasctl("reload")
    wait_for(lambda: not again.exists(), 20, "a retention pass after the restart")
    assert lobby.exists()


@pytest.mark.slow
def test_a_stream_folder_moved_aside_keeps_the_retention_its_stream_had(agent_factory, tmp_path):
    # `mv lobby lobby-2025` is how an operator archives a camera's footage (the camera was
    # replaced, the folder is kept): the folder is the stream's, under another name.
    agent = agent_factory({**config({"lobby": {**CHEAP, "recording": {"retention": 0}},
                                     "hall": {**CHEAP, "recording": {"retention": "90d"}}}),
                           "recordings": {"orphan_retention": "7d"}})
    lobby = [plant(agent.recordings / "lobby" / f"lobby_{d}.ts", d) for d in (400, 30, 10, 1)]
    hall = [plant(agent.recordings / "hall" / f"hall_{d}.ts", d) for d in (80, 30, 1)]
    agent.start()
    agent.wait_all("live", ["lobby", "hall"])
    time.sleep(1)  # the start's pass ran (nothing of theirs is old enough)
    assert all(p.exists() for p in lobby + hall)
    os.rename(agent.recordings / "lobby", agent.recordings / "lobby-2025")
    os.rename(agent.recordings / "hall", agent.recordings / "hall-old")
    canary = plant(tmp_path / "mine" / "mine_30.ts", 30).parent  # an operator's own folder: 7 days
    os.rename(canary, agent.recordings / "mine")
    time.sleep(0.5)  # the watcher indexed the moved-in folders; a reload runs every policy now
    assert agent.vasctl("reload").returncode == 0
    wait_for(lambda: not (agent.recordings / "mine" / "mine_30.ts").exists(), 30,
             "the orphan pass over the operator's own folder")
    assert all((agent.recordings / "lobby-2025" / p.name).exists() for p in lobby), \
        "a keep-for-ever stream's folder moved aside lost its archive"
    assert all((agent.recordings / "hall-old" / p.name).exists() for p in hall), \
        "a 90-day stream's folder moved aside went at orphan_retention"
    agent.stop()
    plant(agent.recordings / "mine2" / "mine2_30.ts", 30)
    agent.start()  # remembered under the new names across a restart
    agent.wait_all("live", ["lobby", "hall"])
    wait_for(lambda: not (agent.recordings / "mine2" / "mine2_30.ts").exists(), 30, "the orphan pass again")
    assert all((agent.recordings / "lobby-2025" / p.name).exists() for p in lobby)
    assert (agent.recordings / "hall-old" / "hall_30.ts").exists()


@pytest.mark.slow
def test_a_removed_stream_s_disk_missing_at_a_start_is_not_forgotten(agent_factory, tmp_path):
    # The removed stream's folder is its own disk (mounted at {root}/lobby); one start with
    # that disk not mounted (a late or failed mount at boot) must not erase what was
    # remembered about it, or the archive goes at orphan_retention once the disk is back.
    import subprocess
    agent = agent_factory({**config({"lobby": {**CHEAP, "recording": {"retention": 0}},
                                     "cam": {**CHEAP, "recording": {"retention": "30d"}}}),
                           "recordings": {"orphan_retention": "7d"}})
    disk = agent.recordings / "lobby"
    disk.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        lobby = [plant(disk / f"lobby_{d}.ts", d) for d in (30, 10, 1)]
        plant(agent.recordings / "cam" / "cam_1.ts", 1)
        agent.start()
        agent.wait_all("live", ["lobby", "cam"])
        agent.write_config({**config({"cam": {**CHEAP, "recording": {"retention": "30d"}}}),
                            "recordings": {"orphan_retention": "7d"}})
        assert agent.vasctl("reload").returncode == 0  # lobby removed: kept for ever, as it said
        agent.stop()
        subprocess.run(["umount", str(disk)], check=True)
        agent.start()  # the disk is not there this time
        agent.wait_all("live", ["cam"])
        expired = plant(agent.recordings / "cam" / "cam_40.ts", 40)
        # The reload's pass goes by the index: wait for the watcher to index the file, not a guess.
        wait_for(lambda: indexed(agent, "cam", expired.name), 20, "the watcher to index the planted segment")
        assert agent.vasctl("reload").returncode == 0
        wait_for(lambda: not expired.exists(), 20, "a retention pass without the disk")
        agent.stop()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
        lobby = [plant(disk / f"lobby_{d}.ts", d) for d in (30, 10, 1)]  # the disk is back (tmpfs: refilled)
        again = plant(agent.recordings / "cam" / "cam_41.ts", 41)
        agent.start()
        agent.wait_all("live", ["cam"])
        wait_for(lambda: not again.exists(), 20, "the start's retention pass with the disk back")
        assert all(p.exists() for p in lobby), "a keep-for-ever archive went once its disk had missed one start"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


async def test_a_reload_during_the_start_scan_is_not_undone_by_the_memory_file(tmp_path, monkeypatch):
    # A stream added while the agent was stopped is in no memory file yet; a reload that
    # removes it while the start scan still runs (minutes on a big cold root) must leave
    # its retention remembered, not replaced by the file's older content.
    import asyncio

    from agent.recordings import memory as retention_memory
    from agent.recordings.service import Retention

    from .test_retention import make_cfg, settle
    root = tmp_path / "rec"
    lobby = [plant(root / "lobby" / f"lobby_{d}.ts", d) for d in (30, 10)]
    plant(root / "cam" / "cam_1.ts", 1)
    real_load, loading = retention_memory.load, asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_load(where):  # the start scan of a big root, standing in: the reload lands meanwhile
        loop.call_soon_threadsafe(loading.set)
        time.sleep(1.0)
        return real_load(where)
    monkeypatch.setattr(retention_memory, "load", slow_load)
    streams = {"lobby": {"retention": 0}, "cam": {"retention": 30 * DAY}}
    r = Retention(make_cfg(root, streams, orphan_retention=7 * DAY), is_running=lambda sid: False,
                  on_change=lambda sid: None)
    await r.start()
    try:
        await asyncio.wait_for(loading.wait(), 10)
        r.update(make_cfg(root, {"cam": streams["cam"]}, orphan_retention=7 * DAY))  # lobby removed
        await asyncio.wait_for(r.ready.wait(), 10)
        await settle(r)
        await r.enforce()
        await settle(r)
        assert r.remembered.get("lobby") == 0
        assert all(p.exists() for p in lobby), "a reload during the start scan was undone: lobby went as an orphan"
    finally:
        await r.close()
