"""Agent CPU as a share of its FFmpeg children's CPU: N real camera streams in copy mode.

What it measures
    The GStreamer RTSP test camera (tests/camera/, --paths paths, 320x240 at
    25 fps) and one vas-agent with --n templated streams (RTSP pulled, video
    copied into HLS segments of the default 10 s: the agent's own argv, recording on, progress
    every 2 s, stall watch armed).  Once every stream is live it waits
    --settle s, then measures --duration s:
    - the agent's CPU: psutil user+system of the agent process (all threads);
    - its children's CPU: for children alive at both ends the difference, for
      children started meanwhile their whole time, and children that exited
      (and were reaped by the agent) through the agent's own children_user +
      children_system, minus what they had used before the window;
    - the share agent / children (target <= 2 %), each as % of one core, the
      camera server's CPU beside them (the machine's other big load), the
      restarts and the streams not live at the end (an overloaded machine shows
      there first), the load average.
    A line every --every s shows the running figures.

How to run
    .venv/bin/python bench/cpu_share.py                          # 100 streams, 10 minutes
    .venv/bin/python bench/cpu_share.py --n 20 --duration 60     # quick check

Everything lives in a temp directory; the camera binds 127.0.0.1; every process
started is stopped at the end (also on Ctrl-C / SIGTERM / errors).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

sys.path.insert(0, str(c.ROOT / "tests"))
from camera.fixture import RtspCamera  # noqa: E402

TARGET_SHARE = 2.0  # percent, issue 21 item 3


def children_cpu(agent: psutil.Process) -> dict[tuple[int, float], float]:
    """(pid, create_time) -> user+system seconds of every live descendant of ``agent``."""
    out = {}
    for p in agent.children(recursive=True):
        try:
            with p.oneshot():
                out[(p.pid, p.create_time())] = c.cpu_seconds(p)
        except psutil.Error:
            pass
    return out


def reaped_cpu(agent: psutil.Process) -> float:
    t = agent.cpu_times()
    return t.children_user + t.children_system


class Window:
    """CPU of the agent and of its children since ``start``, exited children included."""

    def __init__(self, agent: psutil.Process) -> None:
        self.agent = agent
        self.t0, self.own0, self.reaped0 = time.monotonic(), c.cpu_seconds(agent), reaped_cpu(agent)
        self.kids0 = children_cpu(agent)

    def now(self) -> tuple[float, float, float]:
        """(seconds, agent CPU s, children CPU s) since the start."""
        kids = children_cpu(self.agent)
        live = sum(v - self.kids0.get(k, 0.0) for k, v in kids.items())
        gone_before = sum(v for k, v in self.kids0.items() if k not in kids)  # counted in reaped, in full
        reaped = reaped_cpu(self.agent) - self.reaped0 - gone_before
        return time.monotonic() - self.t0, c.cpu_seconds(self.agent) - self.own0, live + max(0.0, reaped)


def streams_summary(snap: Path) -> tuple[int, int]:
    """(streams live, restarts summed) from the agent's snapshot."""
    from agent import snapshot
    data, _ = snapshot.read(snap)
    streams = data.get("streams", [])
    return sum(s.get("state") == "live" for s in streams), sum(s.get("restarts", 0) for s in streams)


def run(args: argparse.Namespace, tmp: Path) -> int:
    paths = tuple(f"cam{i + 1}" for i in range(args.paths))
    camera = RtspCamera(paths).start()
    popen = None
    try:
        cam_proc = psutil.Process(camera.proc.pid) if camera.proc else None
        cfg = {"version": 1, "node": {"runtime_dir": str(tmp / "run"), "drain_period": "0s"},
               "recordings": {"root": str(tmp / "rec"), "min_free": "1MiB"},
               "defaults": {"recording": {"retention": "1h"}, "stall_timeout": "20s"},
               "streams": {f"cam{i}": {"url": camera.url(paths[i % len(paths)])} for i in range(args.n)}}
        (tmp / "streams.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        snap = tmp / "run" / "state.json"
        t0 = time.monotonic()
        popen = c.spawn([str(c.BIN / "vas-agent"), "--config", str(tmp / "streams.yaml")], tmp / "agent.log")
        agent = psutil.Process(popen.pid)
        if c.wait_snapshot(snap, c.all_live(args.n), args.start_timeout, 0.2) is None:
            live, _ = streams_summary(snap) if snap.exists() else (0, 0)
            print(f"not all live within {args.start_timeout:g}s: {live}/{args.n}; "
                  + c.log_tail(tmp / "agent.log", 3))
            return 1
        print(f"[agent] all {args.n} live after {time.monotonic() - t0:.1f}s; settling {args.settle:g}s", flush=True)
        time.sleep(args.settle)
        _, restarts0 = streams_summary(snap)
        win = Window(agent)
        cam0 = c.cpu_seconds(cam_proc) if cam_proc else 0.0
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            time.sleep(min(args.every, max(0.0, end - time.monotonic())))
            secs, own, kids = win.now()
            live, restarts = streams_summary(snap)
            print(f"  {secs:6.0f}s agent {own:7.2f}s CPU ({100 * own / secs:5.2f} % core), children {kids:8.2f}s "
                  f"({100 * kids / secs:6.1f} % core), share {100 * own / kids if kids else float('nan'):5.2f} %; "
                  f"live {live}/{args.n}, restarts +{restarts - restarts0}", flush=True)
        secs, own, kids = win.now()
        cam = c.cpu_seconds(cam_proc) - cam0 if cam_proc else float("nan")
        live, restarts = streams_summary(snap)
        share = 100 * own / kids if kids else float("nan")
        print()
        print(c.machine_line("end"))
        print(f"{args.n} real-camera streams in copy mode (HLS recording, {args.paths} camera paths), "
              f"{secs:.0f} s window:")
        print(f"  agent {own:.2f} s CPU ({100 * own / secs:.2f} % of a core); its children (FFmpeg, ffprobe) "
              f"{kids:.2f} s ({100 * kids / secs:.1f} % of a core, {100 * kids / secs / args.n:.2f} % per camera); "
              f"the camera server {cam:.2f} s ({100 * cam / secs:.1f} % of a core)")
        print(f"  streams live at the end {live}/{args.n}, restarts during the window {restarts - restarts0}")
        ok = share <= TARGET_SHARE and live == args.n
        print(f"target: agent CPU <= {TARGET_SHARE:g} % of its children's: {share:.2f} %  {c.verdict(ok)}")
        print(json.dumps({"n": args.n, "seconds": round(secs, 1), "agent_cpu_s": round(own, 3),
                          "children_cpu_s": round(kids, 3), "share_pct": round(share, 3),
                          "camera_cpu_s": round(cam, 3), "live": live, "restarts": restarts - restarts0}))
        return 0 if ok else 1
    finally:
        c.stop(popen, timeout=30)
        camera.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100, help="camera streams (default 100)")
    p.add_argument("--paths", type=int, default=4, help="camera paths the streams share (default 4)")
    p.add_argument("--duration", type=float, default=600.0, help="measured window in s (default 600)")
    p.add_argument("--settle", type=float, default=10.0, help="s after all live before measuring (default 10)")
    p.add_argument("--every", type=float, default=60.0, help="progress line every S s (default 60)")
    p.add_argument("--start-timeout", type=float, default=120.0)
    p.add_argument("--keep-tmp", action="store_true")
    args = p.parse_args(argv)
    with c.bench_tempdir("vas-bench-cpu-share-", keep=args.keep_tmp) as base:
        try:
            return run(args, base)
        except (KeyboardInterrupt, c.Interrupted):
            print("\ninterrupted; stopping everything", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
