"""Fleet failover figures: per-stream takeover after an agent's SIGKILL, on a real etcd.

What it measures
    3 agents (one machine, each with its own node name, runtime_dir and
    recordings) share --streams cheap streams (one ``tail -F`` per stream) through a
    one-member etcd (Debian's etcd-server) with lease_ttl --ttl.  --kills times:
    SIGKILL the agent that owns the most streams, then sample every 20 ms until
    each of its streams is live on a survivor, then start it again.
    - takeover per stream: SIGKILL -> the stream live on a survivor (p50/p99/max);
      anchor: lease_ttl + 3 s;
    - streams without an owner on etcd (sampled every 50 ms) and for how long;
    - duplicate-owner seconds: time a stream's process ran on two agents at once
      (by /proc), summed over streams;
    - streams lost: streams not live anywhere at the end (anchor 0);
    - etcd requests per second at steady state, from etcd's own
      grpc_server_handled_total over --idle seconds, with --streams and with 10x
      as many streams (anchor: the same: one lease per node, not one per stream).
    --camera N adds a real-camera variant: N streams from the GStreamer RTSP test
    camera, --camera-kills kills (default 3).
    --freezes N: SIGSTOP (not kill) the busiest agent N times, SIGCONT once its
    streams are live elsewhere: duplicate-owner seconds per stream (its process
    alive, not a zombie, on the frozen agent and on a survivor at once; the
    lease fence, agent/fleet/fence.py, stops the frozen agent's children); anchor:
    worst <= lease_ttl + 2 s; and processes the thawed agent started for streams
    it no longer owns (anchor 0).

How to run
    .venv/bin/python bench/failover.py                  # 30 streams, 20 kills, ttl 3s
    .venv/bin/python bench/failover.py --kills 3 --idle 5  # a quick check
    .venv/bin/python bench/failover.py --camera 6         # plus the real-camera variant
    .venv/bin/python bench/failover.py --streams 3 --kills 1 --idle 2 --camera 6 --camera-kills 8   # camera figure
    .venv/bin/python bench/failover.py --kills 0 --freezes 5 --idle 2   # SIGSTOP figures only

Everything binds 127.0.0.1; every process is stopped at the end.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import _common as c  # noqa: E402

from camera.fixture import RtspCamera  # noqa: E402
from tests.faults.scenarios import processes_under  # noqa: E402
from tests.fleet.etcd import EtcdCluster  # noqa: E402
from tests.fleet.test_fleet import etcd_owners, fleet_config, live, start_all  # noqa: E402
from tests.integration.harness import CHEAP, AgentProcess, wait_for  # noqa: E402


def grpc_handled(endpoint: str) -> float:
    with urllib.request.urlopen(endpoint + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("grpc_server_handled_total"))


class Fleet:
    def __init__(self, base: Path, etcd: EtcdCluster, streams: dict, ttl: float) -> None:
        self.etcd = etcd
        self.names = ("a", "b", "c")
        self.agents = {}
        for n in self.names:
            (base / n).mkdir(parents=True)
            cfg = fleet_config(etcd.endpoints, n, streams, ttl=ttl, max_streams=10000)
            self.agents[n] = AgentProcess(base / n, cfg)
        self.ids = list(streams)

    def start(self) -> None:
        start_all(list(self.agents.values()))
        wait_for(self.all_live, 120, "every stream live")

    def all_live(self) -> bool:
        return set().union(*(live(a) for a in self.agents.values())) >= set(self.ids)

    def stop(self) -> None:
        for a in self.agents.values():
            try:
                a.stop(30)
            finally:
                a.kill()


def kill_rounds(fleet: Fleet, kills: int, ttl: float) -> dict:
    takeovers: list[float] = []
    unowned_time: dict[str, float] = {}
    dup_seconds = 0.0
    stop = threading.Event()

    def watch_etcd() -> None:  # streams without an owner, sampled every 50 ms
        while not stop.is_set():
            try:
                owners = etcd_owners(fleet.etcd.endpoints[0])
            except OSError:
                owners = {}
            for sid in fleet.ids:
                if sid not in owners:
                    unowned_time[sid] = unowned_time.get(sid, 0.0) + 0.05
            stop.wait(0.05)
    watcher = threading.Thread(target=watch_etcd, daemon=True)
    watcher.start()
    try:
        for _ in range(kills):
            victim = max(fleet.names, key=lambda n: len(live(fleet.agents[n])))
            lost = live(fleet.agents[victim])
            survivors = [a for n, a in fleet.agents.items() if n != victim]
            killed_at = time.monotonic()
            fleet.agents[victim].kill()
            pending = set(lost)
            deadline = killed_at + 60
            last = killed_at
            while pending and time.monotonic() < deadline:
                now_live = set().union(*(live(a) for a in survivors))
                now = time.monotonic()
                takeovers.extend([now - killed_at] * len(pending & now_live))
                pending -= now_live
                running = [processes_under(a.recordings) for a in survivors]
                dup_seconds += sum(1 for sid in fleet.ids if sum(sid in r for r in running) > 1) * (now - last)
                last = now
                time.sleep(0.02)
            takeovers.extend([float("inf")] * len(pending))
            fleet.agents[victim].start()
            time.sleep(ttl)  # the restarted node registers and settles before the next round
    finally:
        stop.set()
        watcher.join(2)
    lost_streams = len(set(fleet.ids) - set().union(*(live(a) for a in fleet.agents.values())))
    return {"takeovers": takeovers, "unowned": unowned_time, "dup_seconds": dup_seconds, "lost": lost_streams}


def freeze_rounds(fleet: Fleet, freezes: int) -> dict:
    """SIGSTOP the busiest agent; duplicate-owner seconds until its streams are live elsewhere."""
    worst, restarted = 0.0, 0
    for _ in range(freezes):
        victim = max(fleet.names, key=lambda n: len(live(fleet.agents[n])))
        frozen, lost = fleet.agents[victim], live(fleet.agents[victim])
        survivors = [a for n, a in fleet.agents.items() if n != victim]
        both = dict.fromkeys(lost, 0.0)
        frozen.signal(signal.SIGSTOP)
        last = time.monotonic()
        try:
            while time.monotonic() < last + 60 and not (lost <= set().union(*(live(a) for a in survivors))
                                                        and not processes_under(frozen.recordings)):
                time.sleep(0.02)
                now, mine = time.monotonic(), processes_under(frozen.recordings)
                theirs = set().union(*(processes_under(a.recordings) for a in survivors))
                for sid in lost & set(mine) & theirs:
                    both[sid] += now - last
                last = now
        finally:
            frozen.signal(signal.SIGCONT)
        worst = max(worst, *both.values(), 0.0)
        time.sleep(1)  # its snapshot from before the freeze is replaced
        wait_for(lambda f=frozen: f.snapshot()["fleet"]["etcd_up"] and not f.snapshot()["fleet"]["fenced"], 30,
                 "the thawed agent back on etcd")
        end = time.monotonic() + 3
        while time.monotonic() < end:
            restarted = max(restarted, len(set(processes_under(frozen.recordings)) & lost))
            time.sleep(0.05)
        wait_for(fleet.all_live, 60, "every stream live")
    return {"dup_worst": worst, "restarted": restarted}


def etcd_rate(fleet: Fleet, idle: float) -> float:
    before = grpc_handled(fleet.etcd.endpoints[0])
    time.sleep(idle)
    return (grpc_handled(fleet.etcd.endpoints[0]) - before) / idle


def run(base: Path, streams: dict, args: argparse.Namespace, label: str, kills: int) -> dict:
    etcd = EtcdCluster(base / "etcd", 1).start()
    fleet = Fleet(base / "agents", etcd, streams, args.ttl)
    try:
        fleet.start()
        time.sleep(2)
        rate = etcd_rate(fleet, args.idle)
        out = kill_rounds(fleet, kills, args.ttl) if kills else {}
        if label == "cheap" and args.freezes:
            out.update(freeze_rounds(fleet, args.freezes))
        out["etcd_rps"] = rate
        return out
    finally:
        fleet.stop()
        etcd.close()


def report_freezes(res: dict, freezes: int, ttl: float) -> bool:
    ok = res["dup_worst"] <= ttl + 2 and res["restarted"] == 0
    print(f"{freezes} SIGSTOPs of the busiest agent: duplicate-owner seconds per stream, worst {res['dup_worst']:.2f}s "
          f"(anchor <= lease_ttl + 2s = {ttl + 2:g}s); streams the thawed agent restarted without owning them "
          f"{res['restarted']} (anchor 0): {c.verdict(ok)}")
    return ok


def report(label: str, res: dict, ttl: float) -> bool:
    if not res.get("takeovers"):
        return True
    t = res["takeovers"]
    anchor = ttl + 3
    p99 = c.pct(t, 99)
    unowned = res["unowned"]
    print(f"{label}: {len(t)} takeovers; SIGKILL -> live on a survivor p50 {c.pct(t, 50):.2f}s p99 {p99:.2f}s "
          f"max {max(t):.2f}s (anchor p99 <= lease_ttl + 3s = {anchor:g}s: {c.verdict(p99 <= anchor)})")
    print(f"  streams ever without an owner on etcd: {len(unowned)}, longest {max(unowned.values(), default=0):.2f}s, "
          f"total {sum(unowned.values()):.1f} stream-seconds; duplicate-owner seconds {res['dup_seconds']:.2f}; "
          f"streams lost {res['lost']} (anchor 0: {c.verdict(res['lost'] == 0)})")
    return p99 <= anchor and res["lost"] == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=30)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--ttl", type=float, default=3.0)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds to count etcd requests at steady state")
    parser.add_argument("--camera", type=int, default=0, help="also N real-camera streams")
    parser.add_argument("--camera-kills", type=int, default=3, help="kills in the real-camera variant (default 3)")
    parser.add_argument("--freezes", type=int, default=0, help="also N SIGSTOPs of the busiest agent")
    args = parser.parse_args()
    print(c.machine_line())
    ok = True
    with tempfile.TemporaryDirectory(prefix="vas-failover-") as tmp:
        base = Path(tmp)
        res = run(base / "cheap", {f"s{i:03d}": CHEAP for i in range(args.streams)}, args, "cheap", args.kills)
        ok &= report(f"{args.streams} cheap streams, lease_ttl {args.ttl:g}s", res, args.ttl)
        if args.freezes:
            ok &= report_freezes(res, args.freezes, args.ttl)
        big = run(base / "big", {f"s{i:04d}": CHEAP for i in range(args.streams * 10)}, args, "big", 0)
        same = big["etcd_rps"] <= res["etcd_rps"] * 1.5 + 1
        print(f"etcd requests/s at steady state: {res['etcd_rps']:.2f} with {args.streams} streams, "
              f"{big['etcd_rps']:.2f} with {args.streams * 10} (anchor: independent of the stream count: "
              f"{c.verdict(same)})")
        ok &= same
        if args.camera:
            camera = RtspCamera(("cam1", "cam2", "cam3", "cam4")).start()
            try:
                streams = {f"cam{i}": {"url": camera.url(f"cam{i % 4 + 1}")} for i in range(args.camera)}
                res = run(base / "camera", streams, args, "camera", args.camera_kills)
                ok &= report(f"{args.camera} real-camera streams", res, args.ttl)
            finally:
                camera.close()
    print(c.machine_line("end"))
    print(json.dumps({"ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
