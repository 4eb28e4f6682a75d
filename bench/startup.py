"""Start-up: ``vas-agent`` start -> all N streams spawned, and -> all M real-camera streams live.

What it measures
    Cheap (--n 500): a streams.yaml of N verbatim-command streams running
    bench/fake_ffmpeg.sh (as respawn.py and reload.py do), each with the checks a
    production stream gets: recording enabled (its directory made before the
    spawn), a stall watch armed (stall_timeout 60 s), progress parsed.  t0 is the
    bench's ``Popen`` of ``vas-agent``; "spawned" is the moment the last child
    announced itself on the FIFO (it is running the command), "live" the moment
    the agent's snapshot first shows all N live.  Next to it, from the same run:
    the floor, a bare Python loop (a fresh interpreter, no imports beyond
    subprocess) that ``Popen``s the same N argvs behind the same die-with-the-agent
    prefix (setpriv + the parent check, agent/supervise/process.py), t0 also at
    its ``Popen``; and supervisord (autostart, the same argv) to all N announced.
    --rounds times each; medians and every round are printed.

    Camera (--cameras 50): the GStreamer RTSP test camera (tests/camera/, 4
    paths, 320x240 at 25 fps), M templated streams (RTSP copy into HLS
    segments of the default 10 s), vas-agent start -> all M live in the snapshot.  The camera's own
    handshake, measured in the same run right before: one ``ffmpeg -i URL
    -frames:v 1 -f null -`` (process start -> its exit: RTSP handshake, stream
    probe, first frame), and M of them started at once (-> the last exit), the
    same M concurrent sessions the agent opens.

How to run
    .venv/bin/python bench/startup.py                      # 500 cheap x 3 rounds, 50 camera streams
    .venv/bin/python bench/startup.py --n 100 --rounds 1 --cameras 10 --skip-supervisord   # quick
    Options: --period S (fake progress period, default 2)  --start-timeout S  --keep-tmp

Everything lives in a temp directory; the camera binds 127.0.0.1; every process
started is stopped at the end (also on Ctrl-C / SIGTERM / errors).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

sys.path.insert(0, str(c.ROOT / "tests"))
from agent.supervise.process import dying_with_agent  # noqa: E402
from camera.fixture import RtspCamera  # noqa: E402

TARGET_SPAWNED = 2.0  # seconds, issue 21 item 10
#: The floor: a fresh interpreter Popen-ing argvs read from a file, as fast as it can.
FLOOR = """
import json, os, subprocess, sys, time
pid = str(os.getpid())
argvs = [[pid if x == "{pid}" else x for x in a] for a in json.load(open(sys.argv[1]))]
procs = [subprocess.Popen(a, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          start_new_session=True) for a in argvs]
time.sleep(3600)
"""


@dataclass
class Start:
    spawned: float | None = None  # t0 -> the last child announced
    first: float | None = None    # t0 -> the first child announced
    live: float | None = None     # t0 -> all live in the snapshot (agent only)
    note: str = ""


@dataclass
class Series:
    label: str
    runs: list[Start] = field(default_factory=list)


def cheap_config(args: argparse.Namespace, tmp: Path, fifo: Path) -> str:
    """streams_yaml with the production checks on: recording dirs, stall watch; no drain."""
    text = c.streams_yaml(args.n, fifo, args.period, tmp / "run", tmp / "rec")
    cfg = yaml.safe_load(text)
    cfg["node"]["drain_period"] = "0s"
    cfg["defaults"]["stall_timeout"] = "60s"
    cfg["defaults"]["recording"] = {"enabled": True, "segment_duration": "2s"}
    return yaml.safe_dump(cfg, sort_keys=False)


def wait_announced(ann: c.Announcer, n: int, t0: float, timeout: float, alive) -> Start:
    ids = [c.stream_id(i) for i in range(n)]
    if not ann.wait_all(ids, timeout, alive):
        return Start(note=f"{len(ann.pids)}/{n} announced within {timeout:g}s")
    times = [e.t for e in ann.events]
    return Start(spawned=max(times) - t0, first=min(times) - t0)


def run_agent(args: argparse.Namespace, tmp: Path) -> Start:
    tmp.mkdir(parents=True)
    fifo, cfg = tmp / "announce.fifo", tmp / "streams.yaml"
    ann = c.Announcer(fifo)
    c.write_atomic(cfg, cheap_config(args, tmp, fifo))
    popen = None
    try:
        t0 = time.monotonic()
        popen = c.spawn([str(c.BIN / "vas-agent"), "--config", str(cfg)], tmp / "agent.log")
        res = wait_announced(ann, args.n, t0, args.start_timeout, lambda: popen.poll() is None)
        if res.spawned is not None:
            live = c.wait_snapshot(tmp / "run" / "state.json", c.all_live(args.n), args.start_timeout, 0.01)
            res.live = time.monotonic() - t0 if live is not None else None
        if res.note:
            res.note += "; " + c.log_tail(tmp / "agent.log", 2)
        return res
    finally:
        c.teardown(popen, fifo, ann, timeout=30)


def run_floor(args: argparse.Namespace, tmp: Path) -> Start:
    tmp.mkdir(parents=True)
    fifo = tmp / "announce.fifo"
    ann = c.Announcer(fifo)
    prefix = dying_with_agent(["{pid}"])[0]
    prefix = [*prefix[:-2], "{pid}"]  # the parent check names the floor's PID, filled in by the floor
    argvs = []
    for i in range(args.n):
        argv = c.fake_argv(c.stream_id(i), fifo, args.period)
        argv.insert(5, "pipe:1")
        argvs.append(prefix + argv)
    (tmp / "argvs.json").write_text(json.dumps(argvs))
    popen = None
    try:
        t0 = time.monotonic()
        popen = c.spawn([sys.executable, "-S", "-c", FLOOR, str(tmp / "argvs.json")], tmp / "floor.log")
        return wait_announced(ann, args.n, t0, args.start_timeout, lambda: popen.poll() is None)
    finally:
        c.teardown(popen, fifo, ann, timeout=10)


def run_supervisord(args: argparse.Namespace, tmp: Path) -> Start:
    tmp.mkdir(parents=True)
    fifo, conf = tmp / "announce.fifo", tmp / "supervisord.conf"
    ann = c.Announcer(fifo)
    c.write_atomic(conf, c.supervisord_conf(args.n, fifo, args.period, tmp))
    popen = None
    try:
        t0 = time.monotonic()
        popen = c.spawn([str(c.BIN / "supervisord"), "-n", "-c", str(conf)], tmp / "supervisord.log")
        return wait_announced(ann, args.n, t0, args.start_timeout, lambda: popen.poll() is None)
    finally:
        c.teardown(popen, fifo, ann, timeout=60)


# -- real camera -----------------------------------------------------------------------------
def first_frames(urls: list[str], timeout: float) -> tuple[float | None, int]:
    """Start one ``ffmpeg -frames:v 1`` per URL at once; seconds until the last exited 0, failures."""
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp",
            "-timeout", "10000000", "-i", "URL", "-map", "0:v:0", "-frames:v", "1", "-f", "null", "-"]
    t0 = time.monotonic()
    procs = [subprocess.Popen([u if a == "URL" else a for a in argv], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for u in urls]
    failed = 0
    for p in procs:
        try:
            failed += p.wait(max(0.1, timeout - (time.monotonic() - t0))) != 0
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            failed += 1
    return (time.monotonic() - t0 if not failed else None), failed


def run_camera(args: argparse.Namespace, tmp: Path) -> dict:
    tmp.mkdir(parents=True)
    camera = RtspCamera(("cam1", "cam2", "cam3", "cam4")).start()
    popen = None
    try:
        urls = [camera.url(f"cam{i % 4 + 1}") for i in range(args.cameras)]
        one, fail1 = first_frames(urls[:1], 30)
        many, fail_m = first_frames(urls, 60)
        cfg = {"version": 1, "node": {"runtime_dir": str(tmp / "run"), "drain_period": "0s"},
               "recordings": {"root": str(tmp / "rec"), "min_free": "1MiB"},
               "defaults": {"stall_timeout": "20s"},  # recording on, segments of the default 10 s
               "streams": {f"cam{i}": {"url": u} for i, u in enumerate(urls)}}
        (tmp / "streams.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        time.sleep(1)
        t0 = time.monotonic()
        popen = c.spawn([str(c.BIN / "vas-agent"), "--config", str(tmp / "streams.yaml")], tmp / "agent.log")
        live = c.wait_snapshot(tmp / "run" / "state.json", c.all_live(args.cameras), 60, 0.01)
        t_live = time.monotonic() - t0 if live is not None else None
        return {"one": one, "many": many, "failed": fail1 + fail_m, "live": t_live,
                "note": "" if live is not None else c.log_tail(tmp / "agent.log", 3)}
    finally:
        c.stop(popen, timeout=30)
        camera.close()


# -- report ---------------------------------------------------------------------------------
def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def median(values: list[float]) -> float | None:
    return c.pct(values, 50) if values else None


def report(args: argparse.Namespace, series: list[Series], cam: dict | None) -> bool:
    print()
    print(f"start-up, {args.n} cheap streams (recording dirs, stall watch, progress every {args.period:g}s), "
          f"{args.rounds} round(s); seconds from the Popen of the supervisor")
    print(f"{'system':<44}{'spawned p50':>12}{'first p50':>11}{'live p50':>10}   rounds (spawned)")
    for s in series:
        sp = [r.spawned for r in s.runs if r.spawned is not None]
        fi = [r.first for r in s.runs if r.first is not None]
        lv = [r.live for r in s.runs if r.live is not None]
        notes = "; ".join(r.note for r in s.runs if r.note)
        print(f"{s.label:<44}{fmt(median(sp)):>12}{fmt(median(fi)):>11}{fmt(median(lv)):>10}   "
              + " ".join(fmt(r.spawned) for r in s.runs) + (f"  ({notes})" if notes else ""))
    agent = series[0]
    sp = [r.spawned for r in agent.runs if r.spawned is not None]
    ok = len(sp) == len(agent.runs) and median(sp) is not None and median(sp) <= TARGET_SPAWNED
    print()
    print("targets (vas-agent):")
    print(f"  {args.n} spawned <= {TARGET_SPAWNED:g} s (median of {args.rounds}): {fmt(median(sp))} s  {c.verdict(ok)}")
    if cam is not None:
        print(f"  {args.cameras} real-camera streams live: {fmt(cam['live'])} s from start; the camera's own "
              f"first frame, same run: 1 client {fmt(cam['one'])} s, {args.cameras} clients at once "
              f"{fmt(cam['many'])} s (ffmpeg -frames:v 1, process start -> exit)"
              + (f"; {cam['failed']} clients failed" if cam["failed"] else "")
              + (f"; agent: {cam['note']}" if cam["note"] else ""))
        ok &= cam["live"] is not None
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=500, help="cheap streams (default 500)")
    p.add_argument("--rounds", type=int, default=3, help="start-ups per system (default 3)")
    p.add_argument("--cameras", type=int, default=50, help="real-camera streams (default 50; 0: skip)")
    p.add_argument("--period", type=float, default=2.0, help="fake progress period in s (default 2)")
    p.add_argument("--skip-supervisord", action="store_true")
    p.add_argument("--skip-floor", action="store_true")
    p.add_argument("--start-timeout", type=float, default=60.0)
    p.add_argument("--keep-tmp", action="store_true")
    args = p.parse_args(argv)
    systems = [("vas-agent", run_agent)]
    if not args.skip_floor:
        systems.append(("floor: bare Popen loop, same prefix", run_floor))
    if not args.skip_supervisord:
        systems.append(("supervisord", run_supervisord))
    series = [Series(label) for label, _ in systems]
    cam = None
    with c.bench_tempdir("vas-bench-startup-", keep=args.keep_tmp) as base:
        try:
            for r in range(args.rounds):  # interleaved: a load change hits every system alike
                for (label, fn), s in zip(systems, series):
                    res = fn(args, base / f"{fn.__name__[4:]}-{r}")
                    s.runs.append(res)
                    print(f"[{label}] round {r + 1}: spawned {fmt(res.spawned)} s, live {fmt(res.live)} s"
                          + (f" ({res.note})" if res.note else ""), flush=True)
                    time.sleep(1)
            if args.cameras:
                print(f"[camera] {args.cameras} streams ...", flush=True)
                cam = run_camera(args, base / "camera")
        except (KeyboardInterrupt, c.Interrupted):
            print("\ninterrupted; stopping everything", file=sys.stderr)
            return 130
    print()
    print(c.machine_line("end"))
    return 0 if report(args, series, cam) else 1


if __name__ == "__main__":
    sys.exit(main())
