"""Fault scenarios shared by the fault suite (tests/faults/test_faults.py, CI sizes)
and bench/soak.py (the long versions).  Each drives a real agent (harness.AgentProcess)
and returns its figures; the invariants are checked as the fault happens, and a broken
one raises AssertionError naming what was seen.

Process accounting reads /proc: a stream's FFmpeg is any live (non-zombie) process
whose command line names the stream's recording directory, so a duplicate or an
orphan is seen whoever started it.
"""
from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.harness import AgentProcess, alive, is_probe, wait_for


# -- process accounting ------------------------------------------------------------
def processes_under(recordings: Path) -> dict[str, list[int]]:
    """Stream id -> live PIDs whose command line writes into ``recordings/<id>/``.

    The agent's ffprobe of a run's first segment names that file too, but only reads it: not counted.
    """
    marker = str(recordings).rstrip("/") + "/"
    out: dict[str, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                argv = fh.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if is_probe(argv):
            continue
        for arg in argv:  # the HLS output may sit inside a tee muxer's spec: search, don't match
            if marker in arg:
                sid = arg.split(marker, 1)[1].split("/", 1)[0]
                pid = int(entry.name)
                if alive(pid) and pid not in out.get(sid, []):
                    out.setdefault(sid, []).append(pid)
                break
    return out


def duplicates(recordings: Path) -> dict[str, list[int]]:
    """Streams with more than one live process (never allowed)."""
    return {sid: pids for sid, pids in processes_under(recordings).items() if len(pids) > 1}


def assert_no_duplicates(agent: AgentProcess) -> None:
    dups = duplicates(agent.recordings)
    assert not dups, f"two processes for one stream: {dups}"


def assert_no_orphans(agent: AgentProcess, timeout: float = 10) -> None:
    """Nothing of ``agent``'s streams left running (call after it stopped or died)."""
    wait_for(lambda: not processes_under(agent.recordings), timeout,
             f"no process left writing under {agent.recordings}")


def assert_snapshot_whole(agent: AgentProcess) -> dict[str, Any]:
    """state.json parses and no temporary snapshot is left beside it."""
    leftovers = [p.name for p in agent.runtime_dir.iterdir() if p.name.startswith("state.json") and
                 p.name != "state.json"] if agent.runtime_dir.exists() else []
    assert not leftovers, f"partial snapshots left: {leftovers}"
    return json.loads((agent.runtime_dir / "state.json").read_text())


def running(agent: AgentProcess, sids: Iterable[str], states: tuple[str, ...] = ("ready", "live")) -> bool:
    streams = agent.streams()
    return all(streams.get(s, {}).get("state") in states and alive(streams[s]["pid"]) for s in sids)


# -- kill storm ----------------------------------------------------------------------
@dataclass
class KillStorm:
    kills: int = 0
    recovered: int = 0
    seconds: float = 0.0
    duplicate_checks: int = 0
    per_stream: dict[str, int] = field(default_factory=dict)


def kill_storm(agent: AgentProcess, sids: list[str], kills: int, *, rng: random.Random,
               pause: float = 0.02, timeout: float = 300) -> KillStorm:
    """SIGKILL ``kills`` running children spread at random over ``sids``.

    Invariants: every kill is followed by exactly one restart of that stream (its
    ``exit`` restart count equals its kills), never two processes for one stream
    (checked after every kill), and all streams running again at the end.
    """
    out = KillStorm(per_stream={s: 0 for s in sids})
    base = {s: agent.streams()[s]["restart_reasons"].get("exit", 0) for s in sids}
    killed: set[int] = set()
    started = time.monotonic()
    deadline = started + timeout
    while out.kills < kills:
        assert time.monotonic() < deadline, f"kill storm: only {out.kills}/{kills} kills in {timeout}s"
        pids = agent.pids()
        ready = [s for s in sids if pids.get(s) and pids[s] not in killed and alive(pids[s])]  # type: ignore[arg-type]
        if not ready:
            time.sleep(0.05)
            continue
        sid = rng.choice(ready)
        pid = pids[sid]
        assert pid is not None
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.add(pid)
        out.kills += 1
        out.per_stream[sid] += 1
        assert_no_duplicates(agent)
        out.duplicate_checks += 1
        time.sleep(pause)

    def all_recovered() -> bool:
        streams = agent.streams()
        return all(streams[s]["restart_reasons"].get("exit", 0) - base[s] == out.per_stream[s]
                   and streams[s]["pid"] not in killed and alive(streams[s]["pid"]) for s in sids)
    wait_for(all_recovered, 60, "every killed stream restarted once per kill")
    out.recovered = sum(agent.streams()[s]["restart_reasons"].get("exit", 0) - base[s] for s in sids)
    out.seconds = time.monotonic() - started
    assert_no_duplicates(agent)
    return out


# -- camera flaps ----------------------------------------------------------------------
@dataclass
class Flaps:
    flaps: int = 0
    returns: list[float] = field(default_factory=list)  # seconds from camera back to every stream running


def camera_flaps(agent: AgentProcess, camera: Any, sids: list[str], flaps: int, *, rng: random.Random,
                 max_delay: float, down: tuple[float, float] = (0.2, 3.0),
                 up: tuple[float, float] = (0.0, 2.0)) -> Flaps:
    """Stop and start ``camera`` ``flaps`` times at random intervals; after each return
    every stream runs again within ``max_delay`` + 5 s (checked each time)."""
    out = Flaps()
    for _ in range(flaps):
        camera.stop()
        time.sleep(rng.uniform(*down))
        camera.start()
        back = time.monotonic()
        wait_for(lambda: running(agent, sids), max_delay + 5, "every stream running after the camera returned",
                 interval=0.05)
        out.returns.append(time.monotonic() - back)
        out.flaps += 1
        assert_no_duplicates(agent)
        time.sleep(rng.uniform(*up))
    return out


# -- SFU crashes -------------------------------------------------------------------------
@dataclass
class SfuCrashes:
    crashes: int = 0
    recoveries: list[float] = field(default_factory=list)  # SIGKILL -> every stream live again


def sfu_crashes(agent: AgentProcess, sids: list[str], crashes: int, *,
                producers: Callable[[], dict[str, list[dict]]], limit: float = 15.0,
                receiving: Callable[[], dict[str, dict]] | None = None) -> SfuCrashes:
    """SIGKILL the agent's SFU ``crashes`` times; every stream live again within ``limit``
    seconds of the new SFU being up each time, with exactly one producer per stream (and,
    given ``receiving``, the SFU's own counters growing on every stream's producer)."""
    out = SfuCrashes()
    for _ in range(crashes):
        old = agent.snapshot()["sfu"]["pid"]
        killed_at = time.monotonic()
        os.killpg(old, signal.SIGKILL)
        def new_sfu_up(old: int = old) -> bool:
            sfu = agent.snapshot()["sfu"]
            return sfu["pid"] not in (None, old) and sfu["state"] == "up"
        wait_for(new_sfu_up, limit, "a new SFU up")
        wait_for(lambda: all(s["state"] == "live" for sid, s in agent.streams().items() if sid in sids),
                 limit, "every stream live on the new SFU", interval=0.05)
        if receiving is not None:
            wait_for(lambda: sorted(receiving()) == sorted(sids), limit, "the SFU counting every stream's RTP")
        out.recoveries.append(time.monotonic() - killed_at)
        by_stream = producers()
        assert sorted(by_stream) == sorted(sids), f"producers for {sorted(by_stream)}, streams {sorted(sids)}"
        assert all(len(v) == 1 for v in by_stream.values()), f"duplicate producers: {by_stream}"
        out.crashes += 1
        assert_no_duplicates(agent)
    return out


# -- figures ------------------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def exited_lines(agent: AgentProcess, sid: str) -> int:
    return agent.log().count(f"exited: {sid} ")
