"""Segments dated in the future (a clock glitch: an RTC reset to 2036 until NTP fixed it)
are never deleted by any policy (issue 16, item 8), so they must not make a size cap
take the stream's current footage instead, nor hide the live file from the "newest
segment" guard, and they are reported.  Real agent, real files, the real watcher.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from .harness import CHEAP, config, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MiB = 1 << 20
DAY = 86400.0


def plant(path: Path, when: float, size: int = MiB) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (when, when))
    return path


def test_future_dated_segments_do_not_make_the_size_cap_take_current_footage(agent_factory):
    agent = agent_factory(config({"cam": {**CHEAP, "recording": {"max_size": "5MiB", "retention": 0}},
                                  "other": {**CHEAP, "recording": {"retention": "1d"}}}))
    now = time.time()
    glitch = [plant(agent.recordings / "cam" / f"cam_2036_{i}.ts", now + 30 * DAY + i) for i in range(6)]
    current = [plant(agent.recordings / "cam" / f"cam_{h}h.ts", now - h * 3600) for h in (3, 2, 1)]
    canary = plant(agent.recordings / "other" / "other_40d.ts", now - 40 * DAY, 100)
    plant(agent.recordings / "other" / "other_1h.ts", now - 3600, 100)
    agent.start()
    agent.wait_all("live", ["cam", "other"])
    wait_for(lambda: not canary.exists(), 20, "the start's retention pass")
    time.sleep(1)  # the size reason runs in the same pass, right after the age reason
    assert all(p.exists() for p in current), \
        "the size cap took current footage to make up for segments no policy may delete"
    assert all(p.exists() for p in glitch)
    view = agent.streams()["cam"]["recording"]
    assert view["future_dated"] == {"segments": 6, "bytes": 6 * MiB}, view
    assert "6 segments of cam (6.0MiB) are dated in the future" in agent.log()
    assert "dated in the future" in agent.vasctl("status").stdout


def test_a_segment_touched_after_it_was_indexed_is_judged_by_its_date_now(agent_factory):
    # `touch incident.ts` keeps a clip another retention period: the watcher's IN_ATTRIB re-dates it,
    # and the deletion looks at the file itself as well (an event can be lost in an overflow).
    cfg = lambda days: config({"cam": {**CHEAP, "recording": {"retention": f"{days}d"}}})  # noqa: E731
    agent = agent_factory(cfg(30))
    now = time.time()
    incident = plant(agent.recordings / "cam" / "cam_incident.ts", now - 20 * DAY, 100)
    canary = plant(agent.recordings / "cam" / "cam_20d.ts", now - 20 * DAY + 1, 100)
    plant(agent.recordings / "cam" / "cam_1h.ts", now - 3600, 100)
    agent.start()
    agent.wait_all("live", ["cam"])
    time.sleep(1)  # indexed by the start scan at 20 days old
    os.utime(incident, (now - 60, now - 60))  # the operator keeps it: a minute old now
    agent.write_config(cfg(10))
    assert agent.vasctl("reload").returncode == 0
    wait_for(lambda: not canary.exists(), 20, "the reload's retention pass")
    time.sleep(0.5)
    assert incident.exists(), "a segment touched a minute ago was deleted by its indexed date"
    # Counters alone reach the snapshot at most every PROGRESS_FLUSH_INTERVAL (5 s): three of them.
    wait_for(lambda: agent.streams()["cam"]["recording"]["segment_count"] == 2, 15, "the index to count it still")


async def test_future_dated_bytes_do_not_start_a_size_pass_every_tick(tmp_path):
    import asyncio

    from agent.recordings.service import TICK

    from .test_retention import make_cfg, running
    root, now = tmp_path / "rec", time.time()
    for i in range(3):
        plant(root / "cam" / f"cam_2036_{i}.ts", now + 30 * DAY + i)
    plant(root / "cam" / "cam_1h.ts", now - 3600)
    async with running(make_cfg(root, {"cam": {"retention": 0, "max_size": 2 * MiB}})) as r:
        passes = count_passes(r)
        await asyncio.sleep(3 * TICK + 0.5)
        assert passes[0] == 0, "4 MiB over a 2 MiB cap, 3 of them undeletable: a full pass every tick"


async def test_a_held_fmp4_init_does_not_start_a_size_pass_every_tick(tmp_path):
    # The init stays while its segments stay (issue 16, item 3): the stream sits one init over
    # its cap, which no pass can change until a new segment arrives.
    import asyncio

    from agent.recordings.service import TICK

    from .test_retention import make_cfg, running, settle
    root, now = tmp_path / "rec", time.time()
    plant(root / "cam" / "init.mp4", now - 7200, 1000)
    for i in range(4):
        plant(root / "cam" / f"seg_{i}.m4s", now - 7000 + i * 600)
    async with running(make_cfg(root, {"cam": {"retention": 0, "max_size": 2 * MiB}})) as r:
        await settle(r)
        assert (root / "cam" / "init.mp4").exists() and r.index.stats("cam")[:2] == (3, 2 * MiB + 1000)
        passes = count_passes(r)
        await asyncio.sleep(3 * TICK + 0.5)
        assert passes[0] == 0, "a pass every tick that can never delete anything"
        plant(root / "cam" / "seg_9.m4s", now - 60)  # a new segment: the cap acts again
        await asyncio.sleep(TICK + 1)
        await settle(r)
        assert passes[0] >= 1 and not (root / "cam" / "seg_2.m4s").exists()


def count_passes(r) -> list[int]:
    """Count ``r.enforce`` calls from now on: ``[n]``, updated in place."""
    passes = [0]
    enforce = r.enforce

    async def counted() -> None:
        passes[0] += 1
        await enforce()
    r.enforce = counted
    return passes
