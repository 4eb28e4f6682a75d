"""SFU figures on real mediasoup: recovery after an SFU restart, RTP loss across
unrelated changes, and what SFU polling costs an idle agent.

What it measures
    recovery  --streams real streams (the GStreamer RTSP test camera, 4 paths)
              feed the reference SFU (sfu/server.js on mediasoup 3.8.4, built
              by sfu/build-mediasoup.sh) run by the agent (``mediasoup.command``).
              The SFU's process group (node and its mediasoup worker) is
              SIGKILLed --rounds times; each time two figures: from the SIGKILL,
              and from the new SFU being up (the snapshot's ``sfu.since``), to
              every stream ``live`` AND mediasoup counting RTP on every stream's
              producer (``GET /producers``: ``producer.getStats()``).  Anchor:
              the issue's 15 s (the stand-in gave 5 s).
    loss      In the same setup, mediasoup's ``packetsLost`` (RFC 3550: expected
              minus received, from RTP sequence numbers; ``packets_lost`` in
              ``GET /producers``) of the other streams' producers, across
              ``vasctl restart`` of one stream and across a reload that changes
              another stream's command.  A producer re-created meanwhile is
              counted apart (its counter restarts).  Anchor: 0 packets.  Also
              when mediasoup counted the restarted stream's RTP again.
    polling   --n cheap streams (bash children that print a progress block and
              send one RTP packet with a growing sequence number to their
              producer every second) with the SFU, then the same children
              without ``mediasoup:``: the agent's own CPU (psutil user+system)
              over --idle s, as % of one core.  Anchor: the run without an SFU.
    latency   glass-to-glass (camera to decoded frame at a real WebRTC viewer), p50/p99:
              bench/sfu_latency.py, run at the end (--latency SECONDS, 0 to skip)

``--standin`` runs recovery, loss and polling against the stand-in too
(tests/sfu/standin_sfu.py, the Python test double)
and prints both side by side.

How to run
    .venv/bin/python bench/sfu.py                  # --streams 20 --rounds 3 --n 200 --idle 20
    .venv/bin/python bench/sfu.py --standin        # and the stand-in's figures beside them
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
from sfu.real_sfu import sfu_command, sfu_section_env  # noqa: E402

STANDIN = c.ROOT / "tests" / "sfu" / "standin_sfu.py"
KINDS = {"real": "real mediasoup 3.8.4", "standin": "stand-in"}
FAST = {"restart": {"initial_delay": "0.3s", "max_delay": "2s", "jitter": 0.1}, "stall_timeout": "10s",
        "stop_timeout": "3s", "recording": {"segment_duration": "2s"}}
#: One progress block and one RTP packet (V=2, PT 96, a growing sequence number, the producer's
#: SSRC, a 2-byte payload) per second.  bash writes through a line buffer: no byte may be 0x0a.
CHEAP = ("s=$4; printf -v S '\\\\x%02x\\\\x%02x\\\\x%02x\\\\x%02x' $((s>>24&255)) $((s>>16&255)) "
         "$((s>>8&255)) $((s&255)); exec 3>/dev/udp/$2/$3; n=0; q=$((RANDOM+11*256)); while :; do n=$((n+1)); "
         "q=$(((q+1)&65535)); (((q&255)==10)) && q=$((q+1)); (((q>>8)==10)) && q=$((q+256)); "
         "printf -v Q '\\\\x%02x\\\\x%02x' $((q>>8&255)) $((q&255)); "
         "printf 'frame=%d\\nprogress=continue\\n' $n; printf \"\\x80\\x60$Q\\x00\\x00\\x00\\x00$S\\x65\\x88\" >&3; "
         "sleep 1; done")


def mediasoup_section(kind: str, port: int) -> dict:
    """``mediasoup:`` running the reference SFU on real mediasoup, or the stand-in."""
    section = {"api_url": f"http://127.0.0.1:{port}", "ready_timeout": "10s",
               "restart": {"initial_delay": "0.2s", "max_delay": "1s"}, "stop_timeout": "2s"}
    if kind == "real":
        return {**section, "command": sfu_command(port), "env": sfu_section_env()}
    return {**section, "command": [sys.executable, str(STANDIN), "--port", str(port)]}


def write_config(path: Path, tmp: Path, streams: dict, sfu: tuple[str, int] | None) -> None:
    cfg = {"version": 1, "node": {"runtime_dir": str(tmp / "run"), "drain_period": 0},
           "recordings": {"root": str(tmp / "rec")}, "defaults": FAST, "streams": streams}
    if sfu:
        cfg["mediasoup"] = mediasoup_section(*sfu)
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


def get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def counters(kind: str, port: int) -> dict[str, tuple[str, int, int]]:
    """Per stream: (producer id, packets lost, packets), as the SFU itself counts them."""
    if kind == "real":
        return {p["stream_id"]: (p["producer_id"], p["packets_lost"], p["packets"]) for p in get(port, "/producers")}
    return {p["stream_id"]: (p["producer_id"], p["lost"], p["packets"]) for p in get(port, "/_test/stats")["producers"]}


def all_counting(kind: str, port: int, sids) -> bool:
    """Every stream has a producer the SFU counts more RTP on after 0.5 s."""
    before = counters(kind, port)
    time.sleep(0.5)
    after = counters(kind, port)
    return all(s in before and s in after and after[s][0] == before[s][0] and after[s][2] > before[s][2]
               for s in sids)


def recover(tmp: Path, kind: str, port: int, sids) -> tuple[float, float]:
    """SIGKILL the SFU's group; (from the kill, from the new SFU up) to every stream live and counted."""
    old = snapshot(tmp)["sfu"]["pid"]
    killed = time.time()
    os.killpg(old, signal.SIGKILL)
    up = wait(lambda: (s := snapshot(tmp)["sfu"])["state"] == "up" and s["pid"] != old and s, 30)
    live = wait(lambda: all(x["state"] == "live" for x in snapshot(tmp)["streams"]), 60)
    if not (up and live and wait(lambda: all_counting(kind, port, sids), 30, interval=0)):
        return float("inf"), float("inf")
    done = time.time()
    return done - killed, done - up["since"]


def loss_across(kind: str, port: int, sid: str, action) -> tuple[int, int, float]:
    """(packets lost by the other streams, their producers re-created, s until ``sid`` counted again)."""
    before = counters(kind, port)
    started = time.monotonic()
    action()
    wait(lambda: not all_counting(kind, port, [sid]), 5, interval=0)  # its gap
    wait(lambda: all_counting(kind, port, [sid]), 30, interval=0)
    back = time.monotonic() - started
    time.sleep(max(0.0, 8 - back))  # at least 8 s watched
    after = counters(kind, port)
    others = [s for s in before if s != sid]
    same = [s for s in others if after.get(s, ("",))[0] == before[s][0]]
    return sum(after[s][1] - before[s][1] for s in same), len(others) - len(same), back


def recovery_and_loss(tmp: Path, kind: str, n: int, rounds: int) -> dict:
    """The recovery and loss figures of one kind of SFU."""
    port, conf, run = free_port(), tmp / f"{kind}.yaml", tmp / kind
    run.mkdir()
    with RtspCamera(("cam1", "cam2", "cam3", "cam4")) as cam:
        streams = {f"s{i:02d}": {"url": cam.url(f"cam{1 + i % 4}")} for i in range(n)}
        write_config(conf, run, streams, (kind, port))
        agent = c.spawn([str(c.BIN / "vas-agent"), "--config", str(conf)], run / "agent.log")
        try:
            if not wait(lambda: all_counting(kind, port, streams), 120, interval=0.5):
                sys.exit(f"{kind}: streams never all counted by the SFU: {c.log_tail(run / 'agent.log')}")
            times = []
            for _ in range(rounds):
                times.append(recover(run, kind, port, streams))
                time.sleep(3)
            vasctl = [str(c.BIN / "vasctl"), "--config", str(conf)]
            restart = loss_across(kind, port, "s00", lambda: subprocess.run(
                [*vasctl, "restart", "s00"], check=True, capture_output=True))
            streams["s01"]["input_args"] = ["-probesize", "5000000"]
            write_config(conf, run, streams, (kind, port))
            reload = loss_across(kind, port, "s01", lambda: subprocess.run(
                [*vasctl, "reload"], check=True, capture_output=True))
        finally:
            c.stop(agent)
    return {"times": times, "restart": restart, "reload": reload}


def cheap_streams(n: int, with_sfu: bool) -> dict:
    argv = ["/bin/bash", "-c", CHEAP, "cheap", "{progress}", "{rtp_host}", "{rtp_port}", "{ssrc}"]
    if not with_sfu:
        argv = ["/bin/bash", "-c", CHEAP.replace('>&3', '>/dev/null').replace("exec 3>/dev/udp/$2/$3; ", ""),
                "cheap", "{progress}"]
    ssrcs = (x for x in itertools.count(0x10000000) if b"\n" not in x.to_bytes(4, "big"))
    return {f"c{i:03d}": {"command": argv, "recording": {"enabled": False}, "rtp": {"ssrc": next(ssrcs)}}
            for i in range(n)}


def group_cpu(proc: psutil.Process | None) -> float:
    """CPU seconds of a process and its children (the SFU: node and its mediasoup worker)."""
    if proc is None:
        return 0.0
    return c.cpu_seconds(proc) + sum(c.cpu_seconds(k) for k in proc.children(recursive=True))


def idle_cpu(tmp: Path, n: int, idle: float, kind: str | None) -> tuple[float, float | None]:
    """(agent CPU %, SFU CPU % or None) over ``idle`` s with ``n`` cheap live streams."""
    run = tmp / f"cpu-{kind or 'none'}"
    run.mkdir()
    write_config(run / "streams.yaml", run, cheap_streams(n, kind is not None), (kind, free_port()) if kind else None)
    agent = c.spawn([str(c.BIN / "vas-agent"), "--config", str(run / "streams.yaml")], run / "agent.log")
    try:
        if not wait(lambda: all(x["state"] == "live" for x in snapshot(run)["streams"]), 180, interval=0.5):
            sys.exit(f"cheap streams never all live: {c.log_tail(run / 'agent.log')}")
        time.sleep(3)
        me = psutil.Process(agent.pid)
        sfu = psutil.Process(snapshot(run)["sfu"]["pid"]) if kind else None
        start = (c.cpu_seconds(me), group_cpu(sfu))
        time.sleep(idle)
        end = (c.cpu_seconds(me), group_cpu(sfu))
        return (end[0] - start[0]) / idle * 100, ((end[1] - start[1]) / idle * 100 if sfu else None)
    finally:
        c.stop(agent)


def secs(values) -> str:
    return ", ".join(f"{a:.1f}s/{b:.1f}s" for a, b in values)


def report(kind: str, n: int, fig: dict) -> None:
    worst = max(a for a, _ in fig["times"])
    print(f"[{KINDS[kind]}] SFU SIGKILL -> all {n} streams live and counted by the SFU "
          f"(from the kill / from the new SFU up): {secs(fig['times'])}  (anchor <= 15 s: {c.verdict(worst <= 15)})")
    for what, sid in (("restart", "s00"), ("reload", "s01")):
        lost, recreated, back = fig[what]
        print(f"[{KINDS[kind]}] RTP packets lost by the {n - 1} other streams across a {what} of {sid}: {lost}"
              f" ({recreated} of their producers re-created; anchor 0: {c.verdict(lost == 0 and recreated == 0)});"
              f" {sid} counted again after {back:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument("--standin", action="store_true", help="also the stand-in's figures, for comparison")
    parser.add_argument("--keep-tmp", action="store_true")
    parser.add_argument("--latency", type=float, default=30.0,
                        help="seconds of glass-to-glass measurement (bench/sfu_latency.py); 0: skip")
    args = parser.parse_args()
    kinds = ["real", "standin"] if args.standin else ["real"]
    with c.bench_tempdir("vas-bench-sfu-", keep=args.keep_tmp) as tmp:
        for kind in kinds:
            report(kind, args.streams, recovery_and_loss(tmp, kind, args.streams, args.rounds))
        without, _ = idle_cpu(tmp, args.n, args.idle, None)
        for kind in kinds:
            agent, sfu = idle_cpu(tmp, args.n, args.idle, kind)
            print(f"[{KINDS[kind]}] agent CPU, {args.n} cheap live streams, idle {args.idle:g}s: with SFU polling "
                  f"{agent:.2f} % of a core, without an SFU {without:.2f} % (anchor: polling adds "
                  f"{agent - without:+.2f} %); the SFU itself {sfu:.2f} %")
        if args.latency > 0:  # camera timestamp -> decoded frame at a real WebRTC viewer, p50/p99
            subprocess.run([sys.executable, str(Path(__file__).with_name("sfu_latency.py")),
                            "--duration", f"{args.latency:g}"], check=False)


if __name__ == "__main__":
    main()
