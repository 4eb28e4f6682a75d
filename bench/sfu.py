"""SFU figures: recovery after an SFU restart, RTP loss across unrelated changes,
and what SFU polling costs an idle agent.

What it measures
    recovery  --streams real streams (the GStreamer RTSP test camera, 4 paths)
              feed the stand-in SFU (tests/sfu/standin_sfu.py, the test
              stand-in for the operator's MediaSoup app) run by the agent.
              The SFU's process group is SIGKILLed --rounds times; each time
              the figure is the time from the new SFU being up (the snapshot's
              ``sfu.since`` when its state turns ``up``: /health answered 200)
              to every stream ``live`` again.  Anchor: the issue's 15 s.
    loss      In the same setup: the stand-in's per-producer ``lost`` counters
              (RTP sequence gaps) of every other stream, across
              ``vasctl restart`` of one stream and across a reload that changes
              another stream's command.  Anchor: 0 packets.
    polling   --n cheap streams (bash children that print a progress block and
              send one RTP packet to their producer every second) with the
              stand-in, then the same children without ``mediasoup:``: the
              agent's own CPU (psutil user+system) over --idle s, as % of one
              core and per stream.  Anchor: the run without an SFU.

How to run
    .venv/bin/python bench/sfu.py                       # --streams 20 --rounds 3 --n 200 --idle 30
    .venv/bin/python bench/sfu.py --streams 4 --rounds 1 --n 20 --idle 5   # quick check

Everything binds 127.0.0.1; every process is stopped at the end.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _common as c  # noqa: E402

from camera.fixture import RtspCamera, free_port  # noqa: E402

STANDIN = c.ROOT / "tests" / "sfu" / "standin_sfu.py"
FAST = {"restart": {"initial_delay": "0.3s", "max_delay": "2s", "jitter": 0.1}, "stall_timeout": "10s",
        "stop_timeout": "3s", "recording": {"segment_duration": "2s"}}
#: One progress block and one RTP packet (V=2, PT 96, the producer's SSRC) per second.
CHEAP = ("s=$4; printf -v S '\\\\x%02x\\\\x%02x\\\\x%02x\\\\x%02x' $((s>>24&255)) $((s>>16&255)) "
         "$((s>>8&255)) $((s&255)); exec 3>/dev/udp/$2/$3; n=0; while :; do n=$((n+1)); "
         "printf 'frame=%d\\nprogress=continue\\n' $n; printf \"\\x80\\x60\\x00\\x01\\x00\\x00\\x00\\x00$S\" >&3; "
         "sleep 1; done")


def write_config(path: Path, tmp: Path, streams: dict, sfu_port: int | None) -> None:
    cfg = {"version": 1, "node": {"runtime_dir": str(tmp / "run"), "drain_period": 0},
           "recordings": {"root": str(tmp / "rec")}, "defaults": FAST, "streams": streams}
    if sfu_port:
        cfg["mediasoup"] = {"command": [sys.executable, str(STANDIN), "--port", str(sfu_port)],
                            "api_url": f"http://127.0.0.1:{sfu_port}", "ready_timeout": "10s",
                            "restart": {"initial_delay": "0.2s", "max_delay": "1s"}, "stop_timeout": "2s"}
    c.write_atomic(path, yaml.safe_dump(cfg))


def snapshot(tmp: Path) -> dict:
    return json.loads((tmp / "run" / "state.json").read_text())


def wait(pred, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = pred()
            if value:
                return value
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(interval)
    return None


def lost(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_test/stats", timeout=5) as resp:
        stats = json.loads(resp.read())
    return {p["stream_id"]: p["lost"] for p in stats["producers"]}


def recovery_and_loss(tmp: Path, n: int, rounds: int) -> None:
    port, conf = free_port(), tmp / "streams.yaml"
    with RtspCamera(("cam1", "cam2", "cam3", "cam4")) as cam:
        streams = {f"s{i:02d}": {"url": cam.url(f"cam{1 + i % 4}")} for i in range(n)}
        write_config(conf, tmp, streams, port)
        agent = c.spawn([str(c.BIN / "vas-agent"), "--config", str(conf)], tmp / "agent.log")
        try:
            live = lambda: (s := snapshot(tmp)) and all(x["state"] == "live" for x in s["streams"]) and s
            if not wait(live, 90):
                sys.exit(f"streams never all live: {c.log_tail(tmp / 'agent.log')}")
            times = []
            for _ in range(rounds):
                old = snapshot(tmp)["sfu"]["pid"]
                os.killpg(old, signal.SIGKILL)
                up = wait(lambda: (s := snapshot(tmp)["sfu"])["state"] == "up" and s["pid"] != old and s, 30)
                done = wait(live, 60)
                times.append(time.time() - up["since"] if done else float("inf"))
                time.sleep(3)
            print(f"recovery after SFU SIGKILL, {n} real streams: "
                  + ", ".join(f"{t:.1f}s" for t in times) + f"  (anchor <= 15 s: {c.verdict(max(times) <= 15)})")
            time.sleep(3)
            before = lost(port)
            subprocess.run([str(c.BIN / "vasctl"), "--config", str(conf), "restart", "s00"], check=True,
                           capture_output=True)
            time.sleep(5)
            after = lost(port)
            others = sum(after[s] - before[s] for s in before if s != "s00")
            print(f"RTP packets lost by the {n - 1} other streams across a restart of s00: {others} "
                  f"(anchor 0: {c.verdict(others == 0)})")
            streams["s01"]["input_args"] = ["-probesize", "5000000"]
            write_config(conf, tmp, streams, port)
            before = lost(port)
            subprocess.run([str(c.BIN / "vasctl"), "--config", str(conf), "reload"], check=True, capture_output=True)
            time.sleep(5)
            after = lost(port)
            others = sum(after[s] - before[s] for s in before if s != "s01")
            print(f"RTP packets lost by the {n - 1} other streams across a reload changing s01: {others} "
                  f"(anchor 0: {c.verdict(others == 0)})")
        finally:
            c.stop(agent)


def idle_cpu(tmp: Path, n: int, idle: float, with_sfu: bool) -> float:
    run = tmp / ("with" if with_sfu else "without")
    run.mkdir()
    port = free_port() if with_sfu else None
    argv = ["/bin/bash", "-c", CHEAP, "cheap", "{progress}", "{rtp_host}", "{rtp_port}", "{ssrc}"]
    if not with_sfu:
        argv = ["/bin/bash", "-c", CHEAP.replace('>&3', '>/dev/null').replace("exec 3>/dev/udp/$2/$3; ", ""),
                "cheap", "{progress}"]
    # bash writes through a line buffer: an SSRC with a 0x0a byte would split the datagram.
    ssrcs = (x for x in itertools.count(0x10000000) if b"\n" not in x.to_bytes(4, "big"))
    streams = {f"c{i:03d}": {"command": argv, "recording": {"enabled": False}, "rtp": {"ssrc": next(ssrcs)}}
               for i in range(n)}
    write_config(run / "streams.yaml", run, streams, port)
    agent = c.spawn([str(c.BIN / "vas-agent"), "--config", str(run / "streams.yaml")], run / "agent.log")
    try:
        if not wait(lambda: all(x["state"] == "live" for x in snapshot(run)["streams"]), 120):
            sys.exit(f"cheap streams never all live: {c.log_tail(run / 'agent.log')}")
        time.sleep(3)
        proc = psutil.Process(agent.pid)
        start = c.cpu_seconds(proc)
        time.sleep(idle)
        return (c.cpu_seconds(proc) - start) / idle * 100
    finally:
        c.stop(agent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args()
    with c.bench_tempdir("vas-bench-sfu-", keep=args.keep_tmp) as tmp:
        recovery_and_loss(tmp, args.streams, args.rounds)
        with_sfu = idle_cpu(tmp, args.n, args.idle, True)
        without = idle_cpu(tmp, args.n, args.idle, False)
        print(f"agent CPU, {args.n} cheap streams, idle {args.idle:g}s: with SFU polling {with_sfu:.2f} % "
              f"({with_sfu / args.n * 1000:.2f} milli-% per stream), without an SFU {without:.2f} % "
              f"(anchor: polling adds {with_sfu - without:+.2f} %)")


if __name__ == "__main__":
    main()
