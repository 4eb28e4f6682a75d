"""Soak and kill-storm figures: the whole node under random faults for a long time.

What it measures
    kills   --kills SIGKILLs (default 1,000) spread over --kill-streams cheap children
            (one ``tail -F`` process per stream: no camera, no CPU), the same scenario
            as tests/faults/test_faults.py's 100 real-FFmpeg kills: every kill must be
            answered by exactly one restart, never two processes for one stream
            (checked after every kill), no process left after the agent stops.
    soak    --streams real streams (default 50) from the GStreamer RTSP test camera into
            the reference SFU on real mediasoup (sfu/server.js, run by the agent)
            and HLS recording on a tmpfs, for --minutes
            (default 30; --prefill 0.85 first fills 85 % of it with footage older than the
            free-space floor's one-hour margin, so the floor deletes from the start as on a
            node that has recorded for days), with a random fault every --every seconds (on average):
            FFmpeg SIGKILL, FFmpeg SIGSTOP (a stall), camera restart, SFU SIGKILL,
            a reload that changes one stream, a reload with a broken file, the
            recording disk filled by another program for 15 s, and the agent
            SIGKILLed and started again (at most --agent-kills times).
            After each fault every stream must be live again within 60 s.
            Figures: agent RSS and open descriptors every --sample s with the
            least-squares slope of each (per agent lifetime; the longest is
            reported), event-loop lag p99 and max (the agent's own histogram, one
            sample per second), recoveries versus faults, duplicates seen, and
            segments lost: every segment file seen during the run must still exist
            with the same inode at the end, unless retention deleted it by policy
            (the counts must match the agent's own deletion counters).
            Anchors: slopes ~0, recoveries == faults, 0 duplicates, 0 segments lost.

How to run (as root: the recording disk is a tmpfs)
    .venv/bin/python bench/soak.py                                   # both, 30 minutes
    .venv/bin/python bench/soak.py --minutes 3 --streams 20 --kills 200   # a quick check
    .venv/bin/python bench/soak.py --skip-soak                        # kill storm, 20 flaps, 20 SFU crashes

Everything binds 127.0.0.1; every process is stopped at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from agent.recordings.disk import SAFETY_MARGIN  # noqa: E402
from camera.fixture import RtspCamera, free_port  # noqa: E402
from tests.faults import scenarios as sc  # noqa: E402
from tests.integration.harness import CHEAP, AgentProcess, alive, config, fill, wait_for  # noqa: E402
from tests.integration.segment_tree import TS_PACKET, plant  # noqa: E402
from tests.integration.test_sfu import producers_by_stream, sfu_config  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import _common as c  # noqa: E402

FAULTS = ("ffmpeg_kill", "ffmpeg_stall", "camera_restart", "sfu_kill", "reload_change", "reload_bad",
          "disk_full", "agent_kill")


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per hour."""
    if len(samples) < 3:
        return float("nan")
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    den = sum((t - mx) ** 2 for t, _ in samples)
    return sum((t - mx) * (v - my) for t, v in samples) / den * 3600 if den else 0.0


def lag_p99(view: dict) -> float:
    """The upper bound of the bucket holding the 99th percentile of the agent's lag histogram."""
    count = view.get("count", 0)
    for bound, cumulative in view.get("buckets", []):
        if count and cumulative >= 0.99 * count:
            return float("inf") if bound == "+Inf" else float(bound)
    return 0.0


# -- kill storm -----------------------------------------------------------------------------
def kill_storm(base: Path, kills: int, streams: int, seed: int) -> bool:
    print(f"\n== kill storm: {kills} SIGKILLs over {streams} cheap children")
    work = base / "kills"
    work.mkdir()
    agent = AgentProcess(work, config({f"k{i:03d}": CHEAP for i in range(streams)}))
    agent.start()
    try:
        ids = [f"k{i:03d}" for i in range(streams)]
        agent.wait_all("live", ids, timeout=60)
        storm = sc.kill_storm(agent, ids, kills, rng=random.Random(seed), pause=0.005, timeout=1200)
        rc = agent.stop()
        sc.assert_no_orphans(agent)
    finally:
        agent.kill()
    ok = storm.kills == storm.recovered == kills and rc == 0
    print(f"kills {storm.kills}, recoveries {storm.recovered}, duplicate checks {storm.duplicate_checks} "
          f"(0 duplicates), orphans 0, {storm.seconds:.1f}s ({storm.kills / storm.seconds:.1f} kills/s); "
          f"anchor: kills == recoveries: {c.verdict(ok)}")
    return ok


# -- soak -------------------------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


#: Bytes of a planted segment (a 2 s segment of a ~130 kbit/s camera, in whole TS packets).
PREFILL_SEGMENT = 175 * TS_PACKET


def prefill(root: Path, ids: list[str], fraction: float) -> None:
    """Fill ``fraction`` of the recordings filesystem with each stream's older footage, dated
    before the free-space floor's safety margin: the node a long life leaves, whose floor
    deletes from the first minutes (on an empty disk its onset falls at minute ~60)."""
    st = os.statvfs(root)
    per_stream = int(fraction * st.f_blocks * st.f_frsize) // (PREFILL_SEGMENT * len(ids))
    t0 = time.monotonic()
    plant(root, ids, per_stream, size=PREFILL_SEGMENT, age=SAFETY_MARGIN + 600)
    print(f"prefilled: {per_stream * len(ids)} segments of {PREFILL_SEGMENT} B ({fraction:.0%} of the disk), "
          f"older than the floor's {SAFETY_MARGIN / 3600:g} h margin, in {time.monotonic() - t0:.1f}s")


class Segments:
    """Every segment file seen (inode, last mtime seen).  Lost = overwritten (the same name,
    another inode) or a hole: a segment gone while an older one of its stream remains
    (retention only ever takes a stream's oldest first)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: dict[str, tuple[int, float]] = {}
        self.overwritten = 0

    def scan(self) -> set[str]:
        now = set()
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.endswith(".ts"):
                    path = os.path.join(dirpath, name)
                    try:
                        st = os.lstat(path)
                    except FileNotFoundError:
                        continue
                    now.add(path)
                    if path in self.seen and self.seen[path][0] != st.st_ino:
                        self.overwritten += 1
                    self.seen[path] = (st.st_ino, st.st_mtime)
        return now

    def lost(self) -> tuple[int, int]:
        """(gone, lost) at the end of the run."""
        present = self.scan()
        gone = [p for p in self.seen if p not in present]
        oldest_left: dict[str, float] = {}
        for p in present:
            sid = os.path.relpath(p, self.root).split(os.sep, 1)[0]
            oldest_left[sid] = min(oldest_left.get(sid, float("inf")), self.seen[p][1])
        holes = sum(1 for p in gone
                    if self.seen[p][1] > oldest_left.get(os.path.relpath(p, self.root).split(os.sep, 1)[0],
                                                         float("inf")))
        return len(gone), holes + self.overwritten


def deleted_total(agent: AgentProcess) -> int:
    try:
        return sum(r.get("segments", 0) for s in agent.streams().values()
                   for r in s["recording"].get("deleted", {}).values())
    except (OSError, ValueError, KeyError):
        return 0


class Soak:
    def __init__(self, base: Path, args: argparse.Namespace) -> None:
        self.args, self.rng = args, random.Random(args.seed)
        self.work = base / "soak"
        self.work.mkdir()
        self.camera = RtspCamera(("cam1", "cam2", "cam3", "cam4"))
        self.port = free_port()
        self.ids = [f"s{i:02d}" for i in range(args.streams)]
        self.faults: dict[str, int] = {f: 0 for f in FAULTS}
        self.recovered = 0
        self.recoveries: list[float] = []
        self.failures: list[str] = []
        self.duplicates = 0
        self.lifetimes: list[dict] = []  # per agent process: rss/fd samples, lag view
        self.deleted_before_restart = 0

    def cfg(self, change: int = 0) -> dict:
        streams = {sid: {"url": self.camera.url(f"cam{(i + change * (i == 0)) % 4 + 1}"),
                         "recording": {"retention": "30d"}} for i, sid in enumerate(self.ids)}
        cfg = sfu_config(streams, self.port)
        cfg["defaults"]["stall_timeout"] = "10s"
        cfg["defaults"]["recording"] = {"segment_duration": "2s"}
        cfg["recordings"] = {"min_free": "10%", "min_free_hysteresis": "5%",
                             "sweep_interval": f"{self.args.sweep_interval:g}s"}
        return cfg

    def start_agent(self) -> None:
        self.agent.start()
        self.lifetimes.append({"pid": self.agent.proc.pid, "rss": [], "fds": [], "lag": {}})  # type: ignore[union-attr]

    def all_live(self) -> bool:
        streams = self.agent.streams()
        return all(streams.get(s, {}).get("state") == "live" for s in self.ids)

    def sample(self, t0: float) -> None:
        life = self.lifetimes[-1]
        try:
            proc = psutil.Process(life["pid"])
            t = time.monotonic() - t0
            life["rss"].append((t, proc.memory_info().rss))
            life["fds"].append((t, proc.num_fds()))
            life["lag"] = self.agent.snapshot()["agent"]["event_loop_lag_seconds"]
        except (psutil.Error, OSError, ValueError, KeyError):
            pass
        if sc.duplicates(self.agent.recordings):
            self.duplicates += 1

    def inject(self, fault: str) -> set[str]:
        """Inject ``fault``; returns the streams whose process it must replace."""
        agent, rng = self.agent, self.rng
        pids = {k: v for k, v in agent.pids().items() if v and alive(v)}
        hit: set[str] = set()
        if fault in ("ffmpeg_kill", "ffmpeg_stall") and pids:
            sid = rng.choice(sorted(pids))
            os.kill(pids[sid], signal.SIGKILL if fault == "ffmpeg_kill" else signal.SIGSTOP)  # a stall: stall_timeout
            hit = {sid}
        elif fault == "camera_restart":
            self.camera.stop()
            time.sleep(rng.uniform(0.5, 5))
            self.camera.start()
            hit = set(self.ids)
        elif fault == "sfu_kill":
            os.killpg(agent.snapshot()["sfu"]["pid"], signal.SIGKILL)
            hit = set(self.ids)  # every FFmpeg is pointed at the new SFU's producers
        elif fault == "reload_change":
            self.generation += 1
            agent.write_config(self.cfg(self.generation))
            agent.signal(signal.SIGHUP)
            hit = {self.ids[0]}
        elif fault == "reload_bad":
            good = agent.config_path.read_text()
            last = agent.snapshot()["config"]["last_reload"]
            agent.write_raw(good + "\nstreams: [oops\n")
            agent.signal(signal.SIGHUP)
            try:
                wait_for(lambda: (r := agent.snapshot()["config"]["last_reload"]) != last and r and not r["ok"], 30,
                         "the bad reload refused")
            finally:
                agent.write_raw(good)
            if agent.pids() != pids:
                self.failures.append("a refused reload changed running streams")
        elif fault == "disk_full":
            fill(agent.recordings, "filler.bin")
            time.sleep(15)
            (agent.recordings / "filler.bin").unlink()
        elif fault == "agent_kill":
            self.deleted_before_restart += deleted_total(agent)
            agent.kill()
            sc.assert_no_orphans(agent)
            self.start_agent()
            hit = set(self.ids)
        self.faults[fault] += 1
        return {sid for sid in hit if sid in pids}

    def recovered_from(self, before: dict[str, int | None], hit: set[str]) -> bool:
        streams = self.agent.streams()
        return all(streams.get(s, {}).get("state") == "live" for s in self.ids) and \
            all(streams[s]["pid"] != before.get(s) for s in hit)

    def run(self) -> bool:
        args = self.args
        print(f"\n== soak: {len(self.ids)} real streams, {args.minutes} min, a fault every ~{args.every}s")
        self.camera.start()
        self.generation = 0
        with tmpfs(self.work / "recordings", args.disk):
            self.agent = AgentProcess(self.work, self.cfg())
            if args.prefill:
                prefill(self.agent.recordings, self.ids, args.prefill)
            segments = Segments(self.agent.recordings)
            self.start_agent()
            try:
                wait_for(self.all_live, 120, "every stream live")
                t0 = time.monotonic()
                end = t0 + args.minutes * 60
                next_sample = next_fault = t0
                agent_kills = 0
                while time.monotonic() < end:
                    now = time.monotonic()
                    if now >= next_sample:
                        self.sample(t0)
                        segments.scan()
                        next_sample = now + args.sample
                    if now >= next_fault:
                        choices = [f for f in FAULTS if f != "agent_kill" or agent_kills < args.agent_kills]
                        fault = self.rng.choice(choices)
                        agent_kills += fault == "agent_kill"
                        before = self.agent.pids()
                        started = time.monotonic()
                        try:
                            hit = self.inject(fault)
                        except (AssertionError, OSError, KeyError, ValueError) as exc:
                            self.failures.append(f"{fault}: {exc}")
                            print(f"fault {fault} went wrong: {exc}")
                            hit = set()
                        try:
                            wait_for(lambda b=before, h=hit: self.recovered_from(b, h), 60,
                                     f"every stream live after {fault}", interval=0.1)
                            self.recovered += 1
                            self.recoveries.append(time.monotonic() - started)
                        except AssertionError as exc:
                            self.failures.append(str(exc))
                            print(f"not recovered: {exc}")
                        next_fault = time.monotonic() + self.rng.expovariate(1 / args.every)
                    time.sleep(0.5)
                self.sample(t0)
                gone, lost = segments.lost()
                by_policy = self.deleted_before_restart + deleted_total(self.agent)
                rc = self.agent.stop()
                sc.assert_no_orphans(self.agent)
            finally:
                self.agent.kill()
                self.camera.close()
        return self.report(gone, by_policy, lost, rc, len(segments.seen))

    def report(self, gone: int, by_policy: int, lost: int, rc: int, seen: int) -> bool:
        longest = max(self.lifetimes, key=lambda life: len(life["rss"]))
        rss_slope = slope_per_hour(longest["rss"])
        fd_slope = slope_per_hour(longest["fds"])
        rss = [v for _, v in longest["rss"]]
        fds = [v for _, v in longest["fds"]]
        later = longest["rss"][len(longest["rss"]) // 2:]  # a lifetime's second half: past its warm-up
        later_fds = longest["fds"][len(longest["fds"]) // 2:]
        span = (later[-1][0] - later[0][0]) / 60 if len(later) > 1 else 0.0
        lags = [life["lag"] for life in self.lifetimes if life["lag"]]
        p99 = max((lag_p99(v) for v in lags), default=0.0)
        lag_max = max((v.get("max", 0.0) for v in lags), default=0.0)
        injected = sum(self.faults.values())
        print(f"faults injected {injected}: " + ", ".join(f"{k} {v}" for k, v in self.faults.items()))
        print(f"recoveries {self.recovered}/{injected} (the hit streams replaced and every stream live within 60 s), "
              f"fault to all live "
              f"p50 {c.pct(self.recoveries, 50):.1f}s p99 {c.pct(self.recoveries, 99):.1f}s "
              f"max {max(self.recoveries, default=0):.1f}s")
        print(f"agent RSS (longest lifetime, {len(rss)} samples): {min(rss) / 2**20:.1f}-{max(rss) / 2**20:.1f} MiB, "
              f"slope {rss_slope / 2**20:+.2f} MiB/h; open fds {min(fds)}-{max(fds)}, slope {fd_slope:+.2f}/h")
        print(f"  second half of that lifetime ({span:.0f} min): RSS slope {slope_per_hour(later) / 2**20:+.2f} MiB/h "
              f"(target <= +0.5), {min(v for _, v in later) / 2**20:.1f}-{max(v for _, v in later) / 2**20:.1f} MiB; "
              f"fds slope {slope_per_hour(later_fds):+.2f}/h")
        print(f"event-loop lag p99 <= {p99 * 1000:.0f} ms (bucket bound), max {lag_max * 1000:.1f} ms")
        print(f"segments seen {seen} (scans every {self.args.sample:g}s), gone {gone}; retention deleted "
              f"{by_policy} by policy (oldest first, incl. ones written and deleted between scans); lost "
              f"(overwritten or out of order) {lost}; duplicate-process samples {self.duplicates}; agent exit {rc}")
        for failure in self.failures:
            print(f"FAILURE: {failure}")
        ok = (self.recovered == injected and lost == 0 and self.duplicates == 0 and not self.failures and rc == 0)
        print(f"anchor: recoveries == faults, 0 lost, 0 duplicates: {c.verdict(ok)}")
        print(json.dumps({"faults": self.faults, "recovered": self.recovered, "rss_slope_mib_per_h": rss_slope / 2**20,
                          "rss_slope_second_half_mib_per_h": slope_per_hour(later) / 2**20,
                          "fd_slope_per_h": fd_slope, "lag_p99_s": p99, "lag_max_s": lag_max, "segments_seen": seen,
                          "segments_lost": lost}))
        return ok


def scenarios(base: Path, flaps: int, crashes: int, seed: int) -> bool:
    """The fault suite's camera-flap and SFU-crash cases at full size (20 each)."""
    print(f"\n== camera flaps ({flaps}) and SFU crashes ({crashes}), 4 and 3 real streams")
    camera = RtspCamera(("cam1", "cam2", "cam3", "cam4")).start()
    ok = True
    try:
        work = base / "flaps"
        work.mkdir()
        streams = {f"s{i}": {"url": camera.url(f"cam{i % 4 + 1}")} for i in range(4)}
        agent = AgentProcess(work, config(streams))
        agent.start()
        try:
            agent.wait_all("live", list(streams), timeout=60)
            f = sc.camera_flaps(agent, camera, list(streams), flaps, rng=random.Random(seed), max_delay=2.0,
                                down=(0.2, 2.0), up=(0.0, 1.0))
            print(f"camera flaps: {f.flaps}, every stream back within max_delay + 5 s each time; return p50 "
                  f"{c.pct(f.returns, 50):.2f}s max {max(f.returns):.2f}s (anchor 7 s: "
                  f"{c.verdict(max(f.returns) <= 7)})")
            ok &= max(f.returns) <= 7
        finally:
            agent.stop()
            agent.kill()
        work = base / "sfu"
        work.mkdir()
        port = free_port()
        streams = {f"s{i}": {"url": camera.url(f"cam{i % 4 + 1}")} for i in range(3)}
        agent = AgentProcess(work, sfu_config(streams, port))
        agent.start()
        try:
            agent.wait_all("live", list(streams), timeout=60)
            r = sc.sfu_crashes(agent, list(streams), crashes, producers=lambda: producers_by_stream(port))
            print(f"SFU crashes: {r.crashes}, one producer per stream each time; SIGKILL -> every stream live "
                  f"p50 {c.pct(r.recoveries, 50):.2f}s max {max(r.recoveries):.2f}s (anchor 15 s: "
                  f"{c.verdict(max(r.recoveries) <= 15)})")
            ok &= max(r.recoveries) <= 15
        finally:
            agent.stop()
            agent.kill()
    except AssertionError as exc:
        print(f"FAILURE: {exc}")
        ok = False
    finally:
        camera.close()
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--every", type=float, default=30, help="mean seconds between faults")
    parser.add_argument("--sample", type=float, default=10)
    parser.add_argument("--agent-kills", type=int, default=3)
    parser.add_argument("--disk", default="1g", help="size of the recording tmpfs")
    parser.add_argument("--prefill", type=float, default=0.0,
                        help="fill this fraction of the disk with footage older than the floor's margin first")
    parser.add_argument("--sweep-interval", type=float, default=3600, help="recordings.sweep_interval, seconds")
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--kill-streams", type=int, default=50)
    parser.add_argument("--skip-soak", action="store_true")
    parser.add_argument("--skip-kills", action="store_true")
    parser.add_argument("--flaps", type=int, default=20, help="camera flaps of the scenario phase (0: skip)")
    parser.add_argument("--sfu-crashes", type=int, default=20, help="SFU SIGKILLs of the scenario phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = parser.parse_args()
    ok = True
    with c.bench_tempdir("vas-soak-", keep=args.keep) as base:
        if not args.skip_kills:
            ok &= kill_storm(base, args.kills, args.kill_streams, args.seed)
        if args.flaps or args.sfu_crashes:
            ok &= scenarios(base, args.flaps, args.sfu_crashes, args.seed)
        if not args.skip_soak:
            ok &= Soak(base, args).run()
        print(c.machine_line("end"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
