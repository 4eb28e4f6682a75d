"""The whole node under faults: real FFmpeg from the real RTSP camera, the reference SFU on real mediasoup,
real signals, a real tmpfs and a wall clock that jumps.  Each test states its invariant
in its docstring; bench/soak.py runs the same scenarios longer (tests/faults/scenarios.py).
"""
from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent.client import request
from camera.fixture import SUITE_FPS
from tests.faults import scenarios as sc
from tests.integration.harness import CHEAP, alive, config, fill, wait_for
from tests.integration.test_sfu import producers_by_stream, receiving, sfu_config
from tests.sfu.real_sfu import start_real_sfu

pytestmark = pytest.mark.integration
#: The hang catcher of the tests whose ten faults take 70-100 s in a loaded CI run (the default
#: 120 s left no margin); handed out first (tests/conftest.py).
LONG = 300
MiB = 1 << 20
MAX_DELAY = 2.0  # harness.FAST restart.max_delay
#: CI sizes (the suite must stay well under 15 minutes); bench/soak.py runs 20 of each.
FLAPS = SFU_CRASHES = 10
#: Debian's libfaketime (package faketime), whatever the architecture.
FAKETIME_LIB = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), Path("libfaketime.so.1"))


def camera_streams(camera, n: int) -> dict:
    return {f"s{i}": {"url": camera.url(f"cam{i % 4 + 1}")} for i in range(n)}


@pytest.mark.slow
def test_kill_storm_every_kill_recovered_never_two_no_orphans(rtsp_camera, agent_factory):
    """100 SIGKILLs of real FFmpeg over 10 streams: each kill answered by exactly one restart,
    never two processes for a stream, and none left once the agent stops."""
    streams = camera_streams(rtsp_camera, 10)
    agent = agent_factory(config(streams)).start()
    agent.wait_all("live", list(streams), timeout=60)
    storm = sc.kill_storm(agent, list(streams), 100, rng=random.Random(11))
    print(f"\nkill storm: {storm.kills} kills, {storm.recovered} recoveries in {storm.seconds:.1f}s")
    assert storm.kills == storm.recovered == 100
    agent.wait_all("live", list(streams), timeout=60)
    assert agent.stop() == 0
    sc.assert_no_orphans(agent)
    assert "Traceback" not in agent.log()


@pytest.mark.slow
@pytest.mark.timeout(LONG)
def test_camera_flaps_streams_return_each_time_and_the_log_stays_quiet(secure_camera_factory, agent_factory):
    """The camera stopped and started at random (10 times here, 20 in bench/soak.py): after each
    return every stream runs within max_delay + 5 s, and failures are logged at most 3 times,
    then once per 5 minutes."""
    camera = secure_camera_factory()
    streams = camera_streams(camera, 4)
    agent = agent_factory(config(streams)).start()
    agent.wait_all("live", list(streams), timeout=60)
    started = time.monotonic()
    flaps = sc.camera_flaps(agent, camera, list(streams), FLAPS, rng=random.Random(7), max_delay=MAX_DELAY,
                            down=(0.2, 2.0), up=(0.0, 1.0))
    print(f"\ncamera flaps: {flaps.flaps}, return p50 {sc.percentile(flaps.returns, 50):.2f}s "
          f"max {max(flaps.returns):.2f}s")
    minutes = (time.monotonic() - started) / 60
    for sid in streams:
        assert sc.exited_lines(agent, sid) <= 3 + 1 + int(minutes / 5), agent.log()[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(LONG)
def test_sfu_crashes_every_stream_live_again_one_producer_each(rtsp_camera, agent_factory):
    """The reference SFU on real mediasoup SIGKILLed (10 times here): every stream live again
    within 15 s each time, with exactly one producer per stream that mediasoup counts RTP on."""
    from camera.fixture import free_port
    port = free_port()
    streams = camera_streams(rtsp_camera, 3)
    agent = agent_factory(sfu_config(streams, port)).start()
    agent.wait_all("live", list(streams), timeout=60)
    crashes = sc.sfu_crashes(agent, list(streams), SFU_CRASHES, producers=lambda: producers_by_stream(port),
                             receiving=lambda: receiving(port, streams, 0.5))
    print(f"\nSFU crashes: {crashes.crashes}, recovery p50 {sc.percentile(crashes.recoveries, 50):.2f}s "
          f"max {max(crashes.recoveries):.2f}s")
    assert crashes.crashes == SFU_CRASHES


# -- the agent killed at bad moments ------------------------------------------------------
def _come_back_clean(agent, streams: dict, port: int | None = None) -> None:
    """After the agent was SIGKILLed: its children die with it, the next agent starts with
    a whole snapshot, runs every stream once, and (with an SFU) adopts or replaces producers
    without duplicates."""
    sc.assert_no_orphans(agent)
    sc.assert_snapshot_whole(agent)
    agent.start()
    agent.wait_all("live", list(streams), timeout=90)
    sc.assert_no_duplicates(agent)
    children = sc.processes_under(agent.recordings)
    assert sorted(children) == sorted(streams)
    assert all(_ppid(p) == agent.proc.pid for pids in children.values() for p in pids)
    if port is not None:
        by_stream = producers_by_stream(port)
        assert sorted(by_stream) == sorted(streams) and all(len(v) == 1 for v in by_stream.values()), by_stream
        wait_for(lambda: sorted(receiving(port, streams, 0.5)) == sorted(streams), 15, "mediasoup counting RTP")
    assert not [n for n in os.listdir(agent.runtime_dir) if n.endswith(".tmp")]


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


@pytest.mark.slow
def test_agent_killed_during_a_reload(rtsp_camera, agent_factory):
    """SIGKILL while a reload restarts one stream and starts another: the next agent runs the
    new file's streams once each and adopts the external SFU's producers."""
    from camera.fixture import free_port
    port = free_port()
    sfu = start_real_sfu(port)
    try:
        streams = camera_streams(rtsp_camera, 3)
        agent = agent_factory(sfu_config(streams, port, managed=False)).start()
        agent.wait_all("live", list(streams), timeout=60)
        changed = {**streams, "s2": {"url": rtsp_camera.url("cam4")}, "s3": {"url": rtsp_camera.url("cam1")}}
        agent.write_config(sfu_config(changed, port, managed=False))
        agent.signal(signal.SIGHUP)
        time.sleep(random.Random(3).uniform(0.0, 0.15))
        agent.kill()
        _come_back_clean(agent, changed, port)
    finally:
        os.killpg(sfu.pid, signal.SIGKILL)
        sfu.wait(5)


@pytest.mark.slow
def test_agent_killed_during_a_manual_restart(rtsp_camera, agent_factory):
    """SIGKILL while `POST /streams/s0/restart` is being served: nothing left behind."""
    from camera.fixture import free_port
    port = free_port()
    sfu = start_real_sfu(port)
    try:
        streams = camera_streams(rtsp_camera, 3)
        agent = agent_factory(sfu_config(streams, port, managed=False)).start()
        agent.wait_all("live", list(streams), timeout=60)
        old_pid = agent.pids()["s0"]
        answer: list = []
        sock = str(agent.runtime_dir / "agent.sock")
        t = threading.Thread(target=lambda: answer.append(_try(lambda: request(sock, "POST", "/streams/s0/restart"))))
        t.start()
        wait_for(lambda: agent.pids()["s0"] != old_pid or not alive(old_pid), 10, "the restart under way",
                 interval=0.01)
        agent.kill()
        t.join(15)
        _come_back_clean(agent, streams, port)
    finally:
        os.killpg(sfu.pid, signal.SIGKILL)
        sfu.wait(5)


_SPAWN_AND_WAIT = """
import asyncio, sys
import agent.supervise.process as p
p.SETPRIV = sys.argv[1]  # a setpriv that takes a second to start: the agent dies meanwhile
async def main():
    child = await p.Child.spawn([sys.executable, "-c", "import time; time.sleep(30)", sys.argv[2]],
                                on_stdout=lambda d: None, on_stderr=lambda l: None)
    print(child.pid, flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


def test_a_child_spawned_as_the_agent_dies_never_outlives_it(tmp_path):
    """SIGKILL of the agent between a spawn and setpriv's PR_SET_PDEATHSIG: the child must
    not run on unowned (setpriv never checks the parent; under load this left a second
    FFmpeg for one stream beside the next agent's)."""
    import shutil
    import sys
    slow = tmp_path / "setpriv"
    slow.write_text(f"#!/bin/sh\nsleep 1\nexec {shutil.which('setpriv')} \"$@\"\n")
    slow.chmod(0o755)
    marker = f"vas-orphan-{os.getpid()}-{time.monotonic_ns()}"
    agent = subprocess.Popen([sys.executable, "-c", _SPAWN_AND_WAIT, str(slow), marker],
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert agent.stdout is not None
        child = int(agent.stdout.readline())
        agent.kill()  # before the slow setpriv reached its prctl
        agent.wait(5)
        time.sleep(2)  # setpriv ran by now; whatever it runs would be up
        running = [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline_has(pid, marker)]
        assert running == [], f"a child outlived its agent: {running} (spawned as {child})"
    finally:
        agent.kill()
        for pid in (p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, marker)):
            os.kill(int(pid), signal.SIGKILL)


def _cmdline_has(pid: str, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return marker.encode() in fh.read().split(b"\0")
    except OSError:
        return False


def _try(fn):
    try:
        return fn()
    except Exception as exc:  # the agent died under the request: that is the point
        return exc


@pytest.mark.slow
def test_agent_killed_during_a_retention_sweep(agent_factory):
    """SIGKILL while retention deletes 30,000 expired segments of an orphaned stream: the
    next agent finishes the job; nothing else was touched."""
    streams = {"box": CHEAP}
    agent = agent_factory({**config(streams), "recordings": {"orphan_retention": "1h"}})
    orphan = agent.recordings / "gone"
    orphan.mkdir(parents=True)
    old = time.time() - 86400
    for i in range(30000):
        path = orphan / f"gone_{i:07d}.ts"
        path.write_bytes(b"x")
        os.utime(path, (old + i, old + i))
    keep = {orphan / "notes.txt": b"not a segment", orphan / "index.m3u8": b"#EXTM3U\n"}
    for path, data in keep.items():
        path.write_bytes(data)
        os.utime(path, (old, old))
    agent.start()

    def count() -> int:
        return sum(1 for _ in os.scandir(orphan))
    left = wait_for(lambda: (n := count()) < 30000 + len(keep) and n, 60, "the sweep deleting", interval=0.005)
    agent.kill()
    print(f"\nkilled with {left - len(keep)} of 30000 expired segments left")
    assert left > len(keep), "the sweep finished before the kill: plant more segments"
    _come_back_clean(agent, streams)
    wait_for(lambda: count() == len(keep), 60, "the next agent finishing the sweep")
    assert all(path.read_bytes() == data for path, data in keep.items())


@pytest.mark.slow
def test_agent_killed_during_start_up_with_100_streams(agent_factory):
    """SIGKILL while 100 streams are being started: every child dies with the agent and the
    next agent runs each of the 100 exactly once."""
    streams = {f"b{i:03d}": CHEAP for i in range(100)}
    agent = agent_factory(config(streams))
    agent.start()  # returns at the first snapshot: start-up is still spawning
    spawned = len(sc.processes_under(agent.recordings))
    agent.kill()
    print(f"\nkilled with {spawned} of 100 children spawned")
    _come_back_clean(agent, streams)


# -- disk full ---------------------------------------------------------------------------------
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_disk_filled_by_something_else(rtsp_camera, agent_factory, tmp_path):
    """A tmpfs recordings root filled up by another program: RTP to the SFU keeps flowing,
    retention frees space oldest first by the floor policy, and every byte of every file
    outside that policy (non-segments, a symlinked segment's target, the newer segments of
    the other stream, the filler) is unchanged."""
    from camera.fixture import free_port
    from tests.integration.test_sfu import packets
    port = free_port()
    streams = {sid: {"url": rtsp_camera.url(sid), "recording": {"retention": "30d"}} for sid in ("cam1", "cam2")}
    cfg = sfu_config(streams, port)
    cfg["recordings"] = {"min_free": "25%", "min_free_hysteresis": "15%"}
    agent = agent_factory(cfg)
    root = agent.recordings
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(root)], check=True)
    try:
        old = time.time() - 3 * 86400  # well inside the 30-day age policy: only the floor may take them
        (root / "cam1" / "2026-01-01").mkdir(parents=True)
        olds = []
        for i in range(20):  # the policy's fodder: a week old
            path = root / "cam1" / "2026-01-01" / f"old_{i:03d}.ts"
            path.write_bytes(os.urandom(MiB))
            os.utime(path, (old + i, old + i))
            olds.append(path)
        outside = tmp_path / "elsewhere.ts"
        outside.write_bytes(os.urandom(4096))
        untouchable = {
            root / "cam1" / "notes.txt": None, root / "cam1" / "2026-01-01" / "index.m3u8": None,
            root / "cam1" / "2026-01-01" / "part.ts.tmp": None, root / "cam2" / "kept" / "recent_000.ts": None,
            root / "cam2" / "kept" / "recent_001.ts": None, outside: None,
        }
        for path in untouchable:
            if path != outside:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(os.urandom(256 * 1024))
                os.utime(path, (old, old) if "recent" not in path.name else (time.time() - 3600,) * 2)
        (root / "cam1" / "link.ts").symlink_to(outside)
        os.utime(root / "cam1" / "link.ts", (old - 10, old - 10), follow_symlinks=False)
        digests = {p: _digest(p) for p in untouchable}

        agent.start()
        agent.wait_all("live", list(streams), timeout=60)
        filler = root / "filler.bin"  # somebody else's file, at the root: not a segment
        fill(root, filler.name)
        before = {sid: packets(port, sid) for sid in streams}
        st = os.statvfs(root)
        floor = st.f_blocks * st.f_frsize * 25 // 100
        wait_for(lambda: _free(root) >= floor, 30, "retention restoring the free-space floor")
        time.sleep(3)
        after = {sid: packets(port, sid) for sid in streams}
        # Live RTP kept flowing: over 3 s and more, 2 s of the camera's frames at least (a packet or more each).
        assert all(after[sid] > before[sid] + 2 * SUITE_FPS for sid in streams), (before, after)
        gone = [p for p in olds if not p.exists()]
        assert gone and gone == olds[:len(gone)], "only the oldest went, in order"
        assert all(_digest(p) == d for p, d in digests.items()), "a file outside the policy changed"
        assert (root / "cam1" / "link.ts").is_symlink() and filler.exists()
        assert all(s["state"] == "live" for s in agent.streams().values())
        wait_for(lambda: agent.streams()["cam1"]["recording"]["deleted"] == {
            "disk": {"segments": len(gone), "bytes": len(gone) * MiB}}, 15, "the deletions counted in the snapshot")
    finally:
        agent.stop()
        subprocess.run(["umount", "-l", str(root)], check=False)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


# -- clock jumps ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_wall_clock_jumps_neither_restart_streams_nor_expire_segments(rtsp_camera, agent_factory, tmp_path):
    """The agent's wall clock (libfaketime; the monotonic clock is untouched, as on a real host)
    jumps 3 h forward, then 6 h back: no stream stalls or restarts, recording goes on, and no
    segment younger than its 1 h retention is expired by the age policy or by `vasctl cleanup`."""
    spec = tmp_path / "faketime"
    spec.write_text("+0\n")
    assert FAKETIME_LIB.exists(), "libfaketime is missing: ./install.sh --dev installs the faketime package"
    env = {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME_TIMESTAMP_FILE": str(spec), "FAKETIME_NO_CACHE": "1",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    streams = {"cam1": {"url": rtsp_camera.url("cam1"), "recording": {"retention": "1h"}},
               "cam2": {"url": rtsp_camera.url("cam2"), "recording": {"retention": "1h"}}}
    agent = agent_factory(config(streams), env=env)
    planted = []
    for sid, age in (("cam1", 1800), ("cam2", 3000)):
        (agent.recordings / sid / "planted").mkdir(parents=True)
        path = agent.recordings / sid / "planted" / f"{sid}_planted.ts"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (time.time() - age,) * 2)
        planted.append(path)
    agent.start()
    first = agent.wait_all("live", list(streams), timeout=60)
    pids = {sid: s["pid"] for sid, s in first.items()}

    for jump in ("+3h", "-3h"):
        segments = {sid: len(agent.segments(sid)) for sid in streams}
        spec.write_text(jump + "\n")
        time.sleep(12)  # beyond the 4 s stall timeout and the 10 s age batch
        # vasctl on the real clock: under libfaketime every time.sleep fails with EINVAL (its
        # clock_nanosleep), and vasctl sleeps while it watches for the agent's touch of a snapshot
        # dated hours away (or merely late, on a loaded machine).
        out = agent.vasctl("cleanup", env=dict(os.environ))
        assert out.returncode == 0, out.stderr
        streams_now = agent.streams()
        assert {sid: s["pid"] for sid, s in streams_now.items()} == pids, f"restarted after {jump}"
        assert all(s["state"] == "live" and s["restarts"] == 0 for s in streams_now.values()), streams_now
        assert all(p.exists() for p in planted), f"a young segment expired after the jump {jump}"
        assert all(len(agent.segments(sid)) > segments[sid] for sid in streams), "recording stopped"
    wait_for(lambda: agent.snapshot()["recordings"]["clock_steps"] == 2, 15, "both steps in the snapshot")
    assert "wall clock stepped forward by 3h00m" in agent.log() and "stepped back by 6h00m" in agent.log()
