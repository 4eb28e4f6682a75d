"""Exporter throughput and latency with a 500-stream snapshot, against a bare aiohttp floor.

What it measures
    A synthetic snapshot of --n streams (the agent's shape: every stream live,
    with progress, producer and recording fields, and a running process each:
    a ``sleep``, whose CPU and RSS the exporter samples as it does FFmpeg's) is
    written to a temp runtime dir and touched every second like the agent does; vas-exporter
    serves it on 127.0.0.1.  wrk (Debian) then drives, each for --duration s:
      /readyz       --connections connections, --threads threads
      /v2/metrics   one connection (one scraper), as Prometheus does: the cached case
    and, in the same run, a bare aiohttp app answering a fixed JSON body (the
    peer for /readyz) on the exporter's event loop (uvloop, exporter/eventloop.py),
    and the same app on asyncio's own loop (issue 21's anchor: aiohttp as it runs
    by default).  For each: requests/s, p50/p99 latency (wrk's --latency),
    errors (socket errors and non-2xx), and the exporter's CPU (psutil, % of one
    core) and RSS after the run.  /readyz answers 200 (the snapshot is fresh).

    Then /v2/metrics scraped --scrapes times over one keep-alive connection in
    three ways, in the same run; each NEW snapshot moves every stream's progress,
    recording figures and times, and is renamed into place as the agent does:
      production   a new snapshot, then the scrape at a random moment uniformly
                   within --period s after it (default 1 s: a shortened snapshot
                   period; in production the snapshot changes every 5 s and
                   Prometheus scrapes every 15 s, so a scrape lands in the render's
                   window 5x less often than here)
      right after  a new snapshot, then the scrape at once: the worst case, the
                   scrape waits for the exporter to parse, check and render it
      cached       the snapshot unchanged: scrapes back to back, and (the production
                   case's anchor) each uniformly within --period s after the last
    and the floor of the production case: the bare aiohttp app answering the same
    text (the exporter's, read once) from memory, scraped in turn with the production
    scrapes (each uniformly within --period s after ours), so both are measured in the
    same minutes: this host's speed moves from one minute to the next.  After an idle wait the host's
    wake-up (the vCPU's, the client's and the server's) is in every scrape's time:
    the floor says how much of the production p99 is the host's and aiohttp's.
    Only the request is timed; every new-snapshot answer is checked to show the
    new values (``missed``).  Then the CPU of one new snapshot in the exporter's
    code, in-process: the parse (the standard library's and the exporter's), the
    shape check and the render.

Targets (issue 21): /readyz >= 75 % of the bare aiohttp peer's req/s (the peer on the
exporter's loop: like for like) with p99 <= 3 ms (item 5); /v2/metrics p99 <= 5 ms for a
new snapshot (item 1); 0 errors.

How to run
    .venv/bin/python bench/exporter.py                  # --n 500 --duration 10 --scrapes 200
    .venv/bin/python bench/exporter.py --duration 3     # quick check
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _common as c  # noqa: E402

from agent import snapshot  # noqa: E402
from camera.fixture import free_port  # noqa: E402
from exporter.eventloop import chosen  # noqa: E402

FLOOR = '''
import asyncio, sys
from aiohttp import web
BODY = b'{"status":"ready","failing":[]}'
TEXT = []  # /metrics: the exporter's text, read from the file named by argv[2] on the first request
async def ok(request):
    return web.Response(body=BODY, content_type="application/json")
async def text(request):
    if not TEXT:
        TEXT.append(open(sys.argv[2], "rb").read())
    return web.Response(body=TEXT[0], headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
app = web.Application()
app.router.add_get("/readyz", ok)
app.router.add_get("/metrics", text)
loop = __import__("uvloop").new_event_loop() if sys.argv[3] == "uvloop" else asyncio.new_event_loop()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, loop=loop)
'''


#: Run in a child (this file is named exporter.py: it would shadow the package here): the CPU
#: of one new snapshot's parts inside the exporter's code, median of 20 new snapshots.
COST = '''
import json, statistics, sys, time
from agent.snapshot_view import shape_error  # noqa: E402
from exporter.metrics import Metrics
from exporter.recordings import RecordingStats
from exporter import source
from exporter.source import View
raws = [json.dumps(s).encode() for s in json.load(sys.stdin)]
metrics, parts = Metrics(RecordingStats()), {"json": [], "parse": [], "check": [], "render": [], "processes": []}
# The code before issue 21 (to run this bench against it): the json module, a render per scrape.
parse = getattr(source, "parse", lambda raw: json.loads(raw.decode()))
prepare = getattr(metrics, "prepare", lambda view: metrics.render(view, stale_after=5))
for k, raw in enumerate(raws):
    t0 = time.process_time(); json.loads(raw.decode()); t1 = time.process_time(); data = parse(raw)
    t2 = time.process_time(); shape_error(data); t3 = time.process_time()
    prepare(View(data, 0.5, k + 1)); t4 = time.process_time()
    # (before: psutil, in the scrape, kept 2 s)
    sampler = getattr(metrics.sampler, "take", None) or (
        lambda streams: (setattr(metrics.sampler, "taken_at", -1e9), metrics.sampler.sample(streams)))
    t5 = time.process_time(); sampler(data["streams"]); t6 = time.process_time()
    if k:  # the first render has nothing kept
        for name, t in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t6 - t5)):
            parts[name].append(t * 1000)
print(json.dumps({name: statistics.median(v) for name, v in parts.items()}))
'''


#: The streams' processes (``sleep``s standing in for FFmpeg: the exporter samples each one's CPU
#: and RSS, as it samples FFmpeg's); none when the caller started none.
PIDS: list[int] = []


def fake_snapshot(n: int, k: int = 0) -> dict:
    """The agent's snapshot of ``n`` live streams; ``k`` moves every stream's counters (frames,
    bytes, recordings) as ``k`` progress reports would."""
    now = time.time()
    streams = [{
        "id": f"cam{i:03d}", "name": f"Camera {i}", "enabled": True, "url": f"rtsp://admin:***@10.0.{i // 250}.{i % 250}/s",
        "mode": "rtsp", "state": "live", "since": now, "pid": PIDS[i] if i < len(PIDS) else None, "pid_started_at": now - 3600, "restarts": 2,
        "restart_reasons": {"exit": 1, "stall": 1}, "last_exit": None, "last_error": ["[rtsp] timeout"],
        "next_restart_at": None,
        "progress": {"fps": 25.0, "frames": 90000 + i + 125 * k, "bytes": 10**9 + i + 10**6 * k,
                     "out_time_seconds": 3600.0 + 5 * k,
                     "last_progress_at": now},
        "producer": {"id": f"p{i}", "rtp_host": "127.0.0.1", "rtp_port": 40000 + i, "ssrc": 1000 + i,
                     "payload_type": 96, "since": now - 3600, "packets": 10**6, "bytes": 10**9, "score": 10,
                     "confirmed": True},
        "recording": {"enabled": True, "segment_duration_seconds": 10.0, "retention_seconds": 604800.0,
                      "segment_count": 60480 + k, "total_bytes": 60 * 10**9 + 10**6 * k,
                      "oldest_segment_at": now - 604800, "newest_segment_at": now - 5 + 10 * k,
                      "deleted": {"age": {"segments": k, "bytes": 10**6 * k}}}}
        for i in range(n)]
    return {"version": 1, "agent": {"pid": os.getpid(), "started_at": now - 86400, "status": "running",
                                    "runtime_dir": "/run/vas"},
            "config": {"path": "/etc/vas/streams.yaml", "sha256": "x", "recordings_root": "/tmp",
                       "last_reload": None, "needs_restart": []},
            "sfu": {"configured": True, "state": "up", "restarts": 0, "restart_reasons": {}},
            "consumers": {"active": [], "per_stream": {}, "ended": {},
                          "session_duration_seconds": {"buckets": [["+Inf", 0]], "sum": 0.0, "count": 0}},
            "streams": streams}


def wrk(url: str, *, connections: int, threads: int, duration: float) -> dict:
    out = subprocess.run(["wrk", "--latency", f"-c{connections}", f"-t{threads}", f"-d{duration:g}s", url],
                         capture_output=True, text=True, check=True).stdout
    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": ms("50"), "p99": ms("99"),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "errors": errors + (int(non2xx.group(1)) if non2xx else 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="peer and /readyz pairs (the median is shown)")
    parser.add_argument("--scrapes", type=int, default=200, help="scrapes of each /v2/metrics case")
    parser.add_argument("--period", type=float, default=1.0,
                        help="production case: the scrape lands uniformly within this many s after the new snapshot")
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk (./install.sh --dev installs it)")
    with c.bench_tempdir("vas-bench-exporter-", keep=args.keep_tmp) as tmp:
        run(tmp, args)


def run(tmp: Path, args: argparse.Namespace) -> None:
    runtime = tmp / "run"
    runtime.mkdir()
    sleepers = [subprocess.Popen(["sleep", "3600"]) for _ in range(args.n)]
    PIDS[:] = [p.pid for p in sleepers]
    snapshot.write_atomic(runtime / "state.json", fake_snapshot(args.n))
    stop = threading.Event()
    threading.Thread(target=lambda: [os.utime(runtime / "state.json") or stop.wait(1) for _ in iter(stop.is_set, True)],
                     daemon=True).start()
    port, floor_port, anchor_port, loop = free_port(), free_port(), free_port(), chosen()
    conf = tmp / "streams.yaml"
    conf.write_text(json.dumps({"version": 1, "node": {"runtime_dir": str(runtime)}, "streams": {},
                                "exporter": {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp / "tokens")}}))
    exporter = c.spawn([str(c.BIN / "vas-exporter"), "--config", str(conf), "--log-level", "warning"], tmp / "exporter.log")
    floor = c.spawn([sys.executable, "-c", FLOOR, str(floor_port), str(tmp / "metrics.txt"), loop], tmp / "floor.log")
    anchor = c.spawn([sys.executable, "-c", FLOOR, str(anchor_port), str(tmp / "metrics.txt"), "asyncio"],
                     tmp / "anchor.log")
    try:
        for p in (port, floor_port, anchor_port):
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{p}/readyz", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.1)
        floor_row = (f"bare aiohttp JSON (peer, {loop})", f"http://127.0.0.1:{floor_port}/readyz", args.connections,
                     args.threads, floor.pid)
        ready_row = (f"vas-exporter /readyz ({loop})", f"http://127.0.0.1:{port}/readyz", args.connections,
                     args.threads, exporter.pid)
        anchor_row = ("bare aiohttp JSON (asyncio's loop)", f"http://127.0.0.1:{anchor_port}/readyz", args.connections,
                      args.threads, anchor.pid)
        rounds = []  # the three back to back, in alternating order: the load moves between rounds
        for i in range(args.rounds):
            order = (floor_row, ready_row, anchor_row)
            triple = dict(measure(*row, args.duration) for row in (order if i % 2 == 0 else order[::-1]))
            rounds.append((triple[floor_row[0]], triple[ready_row[0]], triple[anchor_row[0]]))
        rounds.sort(key=lambda triple: triple[1]["rps"] / triple[0]["rps"])
        median = rounds[len(rounds) // 2]
        results = [(floor_row[0], args.connections, median[0]), (ready_row[0], args.connections, median[1]),
                   (anchor_row[0], args.connections, median[2]),
                   ("vas-exporter /v2/metrics (cached)", 1, measure("", f"http://127.0.0.1:{port}/v2/metrics", 1, 1,
                                                                    exporter.pid, args.duration)[1])]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/metrics").read()
        (tmp / "metrics.txt").write_bytes(text)
        scraped = {"production": scrapes(port, runtime, args, wait=args.period, beside=floor_port),
                   "right after": scrapes(port, runtime, args, wait=0.0),
                   "cost": json.loads(subprocess.run([sys.executable, "-c", COST], cwd=tmp, check=True, text=True,
                                                     capture_output=True,
                                                     input=json.dumps([fake_snapshot(args.n, k) for k in range(21)])
                                                     ).stdout),
                   "cached": scrapes(port, runtime, args, wait=None),
                   "cached, idle": scrapes(port, runtime, args, wait=None, idle=args.period),
                   "healthy": re.search(rb"^vas_ffmpeg_processes_healthy (\S+)", text, re.M).group(1).decode()}
        report(args, results, scraped, [ready["rps"] / peer["rps"] for peer, ready, _ in rounds])
    finally:
        stop.set()
        c.stop(exporter)
        c.stop(floor)
        c.stop(anchor)
        for p in sleepers:
            p.kill()
            p.wait()


def measure(label: str, url: str, conns: int, threads: int, pid: int, duration: float) -> tuple[str, dict]:
    """wrk's figures for ``url`` and the server's CPU (% of one core, and µs per request)."""
    target = psutil.Process(pid)
    cpu0, t0 = c.cpu_seconds(target), time.monotonic()
    r = wrk(url, connections=conns, threads=threads, duration=duration)
    cpu = c.cpu_seconds(target) - cpu0
    r["cpu"], r["us"] = cpu / (time.monotonic() - t0) * 100, cpu / max(1, r["requests"]) * 1e6
    r["rss"] = target.memory_info().rss / 2**20
    return label, r


def scrapes(port: int, runtime: Path, args: argparse.Namespace, *, wait: float | None, idle: float = 0.0,
            beside: int | None = None) -> dict:
    """/v2/metrics' latencies (ms) over one keep-alive connection.  ``wait`` None: the snapshot
    unchanged, each scrape uniformly within ``idle`` s after the previous; otherwise a new snapshot
    is renamed into place before each scrape (not timed), the scrape comes uniformly within
    ``wait`` s after it, and the answer must show it.  ``beside``: after each scrape, the floor
    on that port (/metrics, its own connection) uniformly within ``wait`` s after it, so the two
    are measured in the same minutes (the host's speed moves from one minute to the next)."""
    conn, times, missed = http.client.HTTPConnection("127.0.0.1", port, timeout=30), [], 0
    floor = http.client.HTTPConnection("127.0.0.1", beside, timeout=30) if beside else None
    floor_times: list[float] = []
    rng = random.Random(21)
    try:
        for k in range(1, args.scrapes + 1):
            if wait is not None:
                snapshot.write_atomic(runtime / "state.json", fake_snapshot(args.n, k + SCRAPED[0]))
                time.sleep(rng.uniform(0, wait))
            else:
                time.sleep(rng.uniform(0, idle))
            body = timed_get(conn, "/v2/metrics", times)
            shown = f'vas_stream_frames_total{{stream="cam000"}} {90000 + 125 * (k + SCRAPED[0])}.0\n'.encode()
            missed += wait is not None and shown not in body
            if floor is not None:
                time.sleep(rng.uniform(0, wait or idle))
                timed_get(floor, "/metrics", floor_times)
    finally:
        conn.close()
        if floor is not None:
            floor.close()
    if wait is not None:
        SCRAPED[0] += args.scrapes  # the next case's snapshots are new too
    found = {"p50": c.pct(times, 50), "p99": c.pct(times, 99), "max": max(times), "missed": missed}
    if floor_times:
        found["floor"] = {"p50": c.pct(floor_times, 50), "p99": c.pct(floor_times, 99), "max": max(floor_times),
                          "missed": 0}
    return found


def timed_get(conn: http.client.HTTPConnection, path: str, times: list[float]) -> bytes:
    """GET ``path`` on ``conn``; its time (ms) appended to ``times``; its body."""
    started = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    times.append((time.perf_counter() - started) * 1000)
    if response.status != 200:
        raise SystemExit(f"{path} answered {response.status}")
    return body


#: Snapshots written so far (each case's first snapshot must differ from the last one).
SCRAPED = [0]


def report(args: argparse.Namespace, results: list, scraped: dict, shares: list[float]) -> None:
    print(f"\nexporter with a {args.n}-stream snapshot; wrk {args.duration:g}s per row; {c.machine_line('end')}")
    print(f"{'target':34} {'conns':>5} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'CPU %':>7} "
          f"{'CPU us/req':>10} {'RSS MB':>7}")
    for label, conns, r in results:
        print(f"{label:34} {conns:>5} {r['rps']:>10.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>7} "
              f"{r['cpu']:>7.1f} {r['us']:>10.1f} {r['rss']:>7.1f}")
    print(f"(the peers and /readyz: the median of {args.rounds} back-to-back rounds; /readyz's share of the peer "
          f"per round: {', '.join(f'{x:.0%}' for x in shares)})")
    print(f"\n/v2/metrics, {args.scrapes} scrapes each over one connection (ms){'':10} p50      p99      max  missed")
    labels = {"production": f"new snapshot, scrape uniformly 0-{args.period:g} s after it (production)",
              "right after": "new snapshot, scrape right after it (worst case)", "cached": "snapshot unchanged (cached)",
              "cached, idle": f"snapshot unchanged, scrape uniformly 0-{args.period:g} s after the last",
              "floor, idle": "bare aiohttp (peer), same text, in turn with ours (floor)"}
    scraped["floor, idle"] = scraped["production"]["floor"]
    for label, text in labels.items():
        r = scraped[label]
        print(f"  {text:60} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['max']:>8.2f} {r['missed']:>7}")
    cost = scraped["cost"]
    total = cost["parse"] + cost["check"] + cost["render"]
    print(f"  CPU of one new snapshot in the exporter's code (in-process, median of 20): {total:.1f} ms = parse "
          f"{cost['parse']:.1f} (json module: {cost['json']:.1f}) + shape check {cost['check']:.1f} + render "
          f"{cost['render']:.1f} ms")
    print(f"  CPU of one sample of the {len(PIDS)} streams' processes (on a thread every 5 s while scrapes come, "
          f"never in a scrape): {cost['processes']:.1f} ms; processes in a scrape: {scraped['healthy']}")
    floor, ready, anchor, metrics = (r for _, _, r in results)
    new, worst, cached, idle = scraped["production"], scraped["right after"], scraped["cached"], scraped["floor, idle"]
    share = ready["rps"] / floor["rps"]
    print("\ntargets (issue 21; the peer measured in this run):")
    print(f"  /readyz >= 75% of the bare aiohttp peer: {share:.0%} ({ready['rps']:.0f} vs {floor['rps']:.0f} req/s; "
          f"CPU per request {floor['us'] / ready['us']:.0%} of the peer's)  {c.verdict(share >= 0.75)}")
    print(f"    (against the peer on asyncio's loop, the issue's anchor: {ready['rps'] / anchor['rps']:.0%}, "
          f"{anchor['rps']:.0f} req/s; CPU per request {anchor['us'] / ready['us']:.0%} of its)")
    print(f"  /readyz p99 <= 3 ms: {ready['p99']:.2f} ms (peer {floor['p99']:.2f} ms, on asyncio's loop "
          f"{anchor['p99']:.2f} ms)  {c.verdict(ready['p99'] <= 3)}")
    print(f"  /v2/metrics p99 <= 5 ms for a new snapshot (production): {new['p99']:.2f} ms (cached "
          f"{cached['p99']:.2f} ms; the floor, bare aiohttp in turn with it after the same idle waits, "
          f"{idle['p99']:.2f} ms: {new['p99'] / idle['p99']:.2f}x, {new['p99'] - idle['p99']:+.2f} ms)  "
          f"{c.verdict(new['p99'] <= 5)}")
    print(f"  /v2/metrics p99 <= 5 ms right after a new snapshot (worst case): {worst['p99']:.2f} ms  "
          f"{c.verdict(worst['p99'] <= 5)}")
    print(f"  every new snapshot seen by its scrape: {new['missed'] + worst['missed']} missed  "
          f"{c.verdict(new['missed'] + worst['missed'] == 0)}")
    errors = ready["errors"] + metrics["errors"]
    print(f"  0 errors: {errors}  {c.verdict(errors == 0)}")


if __name__ == "__main__":
    main()
