"""Reload cost with 500 streams: vas-agent's POST /reload vs supervisorctl update.

What it measures
    vas-agent: generates a --n stream streams.yaml (verbatim ``command:`` streams
    running bench/fake_ffmpeg.sh, a progress block every --period s), starts
    the agent and waits until the snapshot shows every stream live.  Then
    --reloads times: edits ONE random stream's command (a ``gen=K`` argument the
    fake ignores), records every PID from the snapshot, and times
    ``POST /reload`` over the unix control socket (agent/client.py ``request``)
    from request to response; the agent's CPU time (psutil user+system, all
    threads) is read around the request.  After the response it waits for the
    edited stream's new child to announce itself on the FIFO and for the
    snapshot to show it live, then counts how many of the other N-1 PIDs are
    unchanged (and that no other child announced a restart).  --cli-reloads
    more rounds do the same through ``vasctl reload`` as a subprocess (what an
    operator or systemd's ExecReload runs, Python start-up included), to
    compare like with like against supervisorctl.

    supervisord: the same N programs (autorestart, startsecs=0, stopasgroup,
    stdout/stderr_logfile=NONE, RPC on a unix socket), waits until all are
    RUNNING, then --sup-updates times edits one program's command and times
    ``supervisorctl -c CONF update``, counting kept PIDs from
    ``supervisorctl status`` before and after, and supervisord's CPU time.

    For context: ``agent.config.loader.load()`` of the generated file in-process
    (p50 over --load-repeats), which every reload pays before diffing.

How to run
    .venv/bin/python bench/reload.py                     # defaults: --n 500 --reloads 20
    .venv/bin/python bench/reload.py --n 50 --reloads 5 --sup-updates 2   # quick check
    Options: --cli-reloads K  --sup-updates K  --skip-supervisord  --load-repeats K
    --period S  --seed S  --keep-tmp (leave logs/configs for inspection).

Everything lives in a temp directory; nothing listens on the network; every
process started is stopped at the end (also on Ctrl-C / SIGTERM / errors).
"""
from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

from agent import snapshot  # noqa: E402
from agent.client import request  # noqa: E402
from agent.config import loader as agent_config  # noqa: E402

ROUND_TIMEOUT = 15.0  # seconds: the edited child must be running again within this


@dataclass
class Round:
    latency_ms: float
    cpu_ms: float             # psutil user+system delta (10 ms clock ticks)
    cpu_fine_ms: float        # /proc/PID/task/*/schedstat delta (ns)
    kept: int
    others: int
    new_pid: bool
    running_ms: float | None  # request -> the edited stream's new child announced itself
    strays: int               # other children that restarted meanwhile (should be 0)
    error: str = ""


@dataclass
class Series:
    label: str
    rounds: list[Round] = field(default_factory=list)
    note: str = ""


def timed_call(pool: ThreadPoolExecutor, ann: c.Announcer, proc: psutil.Process, fn, sid: str,
               old_pid: int | None) -> tuple[float, tuple[float, float], object, c.Announce | None, int, float | None]:
    """Run ``fn`` in a worker while this thread timestamps FIFO announces.

    Returns latency (s), supervisor CPU (s: psutil, schedstat), fn's result, the edited stream's
    new announce (or None), how many other children announced meanwhile, and
    the time from the call to that new announce (s, or None).
    """
    ann.drain()

    def call():
        ns0, cpu0, t0 = c.cpu_ns(proc.pid), c.cpu_seconds(proc), time.monotonic()
        out = fn()
        t1 = time.monotonic()
        return t0, t1, (c.cpu_seconds(proc) - cpu0, (c.cpu_ns(proc.pid) - ns0) / 1e9), out

    fut = pool.submit(call)
    start = time.monotonic()
    new, strays = None, 0
    while time.monotonic() - start < ROUND_TIMEOUT + 120:
        for ev in ann.poll(0.005):
            if ev.sid == sid and ev.pid != old_pid and new is None:
                new = ev
            elif ev.sid != sid:
                strays += 1
        if fut.done() and (new is not None or time.monotonic() - start > ROUND_TIMEOUT):
            break
    t0, t1, cpu, out = fut.result(timeout=120)
    return t1 - t0, cpu, out, new, strays, (new.t - t0) if new else None


# -- vas-agent ----------------------------------------------------------------------------
def agent_pids(path: Path) -> dict[str, int | None]:
    data, _ = snapshot.read(path)
    return {s["id"]: s.get("pid") for s in data["streams"]}


def run_agent(args: argparse.Namespace, base: Path, rng: random.Random) -> tuple[Series, Series, str]:
    tmp = base / "agent"
    tmp.mkdir()
    ids = [c.stream_id(i) for i in range(args.n)]
    gens = {sid: 0 for sid in ids}
    fifo, cfg, run = tmp / "announce.fifo", tmp / "streams.yaml", tmp / "run"
    snap, sock = run / snapshot.SNAPSHOT_NAME, run / snapshot.SOCKET_NAME
    ann = c.Announcer(fifo)
    api, cli = Series("vas-agent POST /reload"), Series("vas-agent `vasctl reload` (CLI)")
    popen = None

    def write() -> None:
        c.write_atomic(cfg, c.streams_yaml(args.n, fifo, args.period, run, tmp / "rec", gens))

    try:
        write()
        print(f"[agent] starting {args.n} streams ...", flush=True)
        t0 = time.monotonic()
        popen = c.spawn([str(c.BIN / "vas-agent"), "--config", str(cfg)], tmp / "agent.log")
        proc = psutil.Process(popen.pid)
        alive = lambda: popen.poll() is None  # noqa: E731
        if not (ann.wait_all(ids, args.start_timeout, alive)
                and c.wait_snapshot(snap, c.all_live(args.n), args.start_timeout) is not None):
            return api, cli, f"agent not ready: {len(ann.pids)}/{args.n} announced; " + c.log_tail(tmp / "agent.log")
        print(f"[agent] all live in {time.monotonic() - t0:.1f}s; "
              f"{args.reloads} reloads via POST /reload, {args.cli_reloads} via vasctl ...", flush=True)
        time.sleep(1.0)

        def post():
            return request(str(sock), "POST", "/reload", timeout=60)

        def vasctl():
            res = subprocess.run([str(c.BIN / "vasctl"), "--socket", str(sock), "reload"], capture_output=True,
                                 text=True, timeout=60, stdin=subprocess.DEVNULL)
            return (200 if res.returncode == 0 else 500), {"error": (res.stdout + res.stderr).strip()}

        with ThreadPoolExecutor(1) as pool:
            for r in range(args.reloads + args.cli_reloads):
                series, fn = (api, post) if r < args.reloads else (cli, vasctl)
                sid = rng.choice(ids)
                gens[sid] += 1
                write()
                before = agent_pids(snap)
                latency, cpu, (status, body), new, strays, running = timed_call(pool, ann, proc, fn, sid, before[sid])
                error = ""
                if status != 200:
                    error = f"HTTP {status}: {body.get('error')}"
                elif series is api and list(body.get("restarted", [])) != [sid]:
                    error = f"restarted {body.get('restarted')}, expected [{sid}]"
                want = new.pid if new else None
                after_data = c.wait_snapshot(
                    snap, lambda d: any(s["id"] == sid and s.get("pid") == want and s["state"] == "live"
                                        for s in d["streams"]), 10.0) if want else None
                after = agent_pids(snap)
                kept = sum(after.get(i) == before[i] for i in ids if i != sid)
                if after_data is None and not error:
                    error = "edited stream not live with a new pid in the snapshot"
                series.rounds.append(Round(latency * 1000, cpu[0] * 1000, cpu[1] * 1000, kept, len(ids) - 1,
                                           bool(want) and after.get(sid) == want and want != before[sid],
                                           running * 1000 if running is not None else None, strays, error))
                if error:
                    print(f"[agent] round {r}: {error}", flush=True)
                time.sleep(0.3)
        return api, cli, ""
    finally:
        c.teardown(popen, fifo, ann, timeout=30)


# -- supervisord ---------------------------------------------------------------------------
def run_supervisord(args: argparse.Namespace, base: Path, rng: random.Random) -> tuple[Series, str]:
    tmp = base / "supervisord"
    tmp.mkdir()
    ids = [c.stream_id(i) for i in range(args.n)]
    gens = {sid: 0 for sid in ids}
    fifo, conf = tmp / "announce.fifo", tmp / "supervisord.conf"
    ann = c.Announcer(fifo)
    series = Series("supervisord `supervisorctl update`")
    popen = None

    def write() -> None:
        c.write_atomic(conf, c.supervisord_conf(args.n, fifo, args.period, tmp, gens))

    try:
        write()
        print(f"[supervisord] starting {args.n} programs ...", flush=True)
        t0 = time.monotonic()
        popen = c.spawn([str(c.BIN / "supervisord"), "-n", "-c", str(conf)], tmp / "supervisord.log")
        proc = psutil.Process(popen.pid)
        if not ann.wait_all(ids, args.start_timeout, lambda: popen.poll() is None):
            return series, (f"supervisord not ready: {len(ann.pids)}/{args.n} announced; "
                            + c.log_tail(tmp / "supervisord.log"))
        deadline = time.monotonic() + args.start_timeout
        while time.monotonic() < deadline:
            pids = c.supervisor_pids(conf)
            if len(pids) == args.n and all(pids.values()):
                break
            time.sleep(0.5)
        else:
            return series, "supervisord: not all programs RUNNING"
        print(f"[supervisord] all RUNNING in {time.monotonic() - t0:.1f}s; {args.sup_updates} updates ...", flush=True)
        time.sleep(1.0)

        def update():
            res = c.supervisorctl(conf, "update")
            return (200 if res.returncode == 0 else 500), {"error": (res.stdout + res.stderr).strip()}

        with ThreadPoolExecutor(1) as pool:
            for r in range(args.sup_updates):
                sid = rng.choice(ids)
                gens[sid] += 1
                write()
                before = c.supervisor_pids(conf)
                latency, cpu, (status, body), new, strays, running = timed_call(
                    pool, ann, proc, update, sid, before.get(sid))
                error = "" if status == 200 else f"supervisorctl update failed: {body.get('error')}"
                want = new.pid if new else None
                after: dict[str, int | None] = {}
                for _ in range(20):  # bounded: the new process shows as RUNNING within a tick or two
                    after = c.supervisor_pids(conf)
                    if want and after.get(sid) == want:
                        break
                    time.sleep(0.25)
                kept = sum(after.get(i) == before.get(i) for i in ids if i != sid)
                ok_new = bool(want) and after.get(sid) == want and want != before.get(sid)
                if not ok_new and not error:
                    error = "edited program has no new pid"
                series.rounds.append(Round(latency * 1000, cpu[0] * 1000, cpu[1] * 1000, kept, len(ids) - 1, ok_new,
                                           running * 1000 if running is not None else None, strays, error))
                if error:
                    print(f"[supervisord] round {r}: {error}", flush=True)
                time.sleep(0.3)
        return series, ""
    finally:
        c.teardown(popen, fifo, ann, timeout=60)


# -- loader.load in-process -------------------------------------------------------------------
def time_config_load(args: argparse.Namespace, base: Path) -> list[float]:
    tmp = base / "load"
    tmp.mkdir()
    path = tmp / "streams.yaml"
    path.write_text(c.streams_yaml(args.n, tmp / "announce.fifo", args.period, tmp / "run", tmp / "rec"))
    out = []
    for _ in range(args.load_repeats):
        t0 = time.perf_counter()
        cfg = agent_config.load(path)
        out.append((time.perf_counter() - t0) * 1000)
        assert len(cfg.streams) == args.n
    return out


# -- report -----------------------------------------------------------------------------------
def fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None or x != x else format(x, spec)


def report(args: argparse.Namespace, series: list[Series], load_ms: list[float], notes: list[str]) -> None:
    others = args.n - 1
    print()
    print(f"reload with N={args.n} streams, one stream's command edited per reload, "
          f"progress every {args.period:g}s")
    print(f"{'system / path':<38}{'runs':>5}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'kept (min)':>13}"
          f"{'new pid':>9}{'CPU ms':>8}{'(psutil)':>9}{'running p50':>13}")
    for s in series:
        lat = [r.latency_ms for r in s.rounds]
        kept = min((r.kept for r in s.rounds), default=None)
        run = [r.running_ms for r in s.rounds if r.running_ms is not None]
        print(f"{s.label:<38}{len(s.rounds):>5}{fmt(c.pct(lat, 50)):>9}{fmt(c.pct(lat, 99)):>9}"
              f"{fmt(max(lat) if lat else None):>9}{(f'{kept}/{others}' if kept is not None else '-'):>13}"
              f"{sum(r.new_pid for r in s.rounds):>5}/{len(s.rounds):<3}"
              f"{fmt(c.pct([r.cpu_fine_ms for r in s.rounds], 50)):>8}"
              f"{fmt(sum(r.cpu_ms for r in s.rounds) / len(s.rounds) if s.rounds else None):>9}"
              f"{fmt(c.pct(run, 50)):>13}")
    print("  (latency: request -> response; CPU ms: the supervisor process's own CPU time (all threads, not its")
    print("   children) during the request: p50 from /proc/PID/task/*/schedstat, and psutil user+system as a mean;")
    print("   running: request -> the edited stream's new child announced itself; p99 of few runs ~ their max)")
    strays = sum(r.strays for s in series for r in s.rounds)
    if strays:
        print(f"  warning: {strays} other children (re)started during reloads")
    if load_ms:
        print(f"agent.config.loader.load() of the {args.n}-stream file in-process: p50 {c.pct(load_ms, 50):.1f} ms "
              f"over {len(load_ms)} (min {min(load_ms):.1f}, max {max(load_ms):.1f})")
    for note in notes:
        if note:
            print(f"note: {note}")
    print()
    api = series[0]
    lat = [r.latency_ms for r in api.rounds]
    print("targets (vas-agent, POST /reload):")
    if lat:
        p99 = c.pct(lat, 99)
        errors = sum(bool(r.error) for r in api.rounds)
        print(f"  reload p99 <= 100 ms: {p99:.1f} ms  {c.verdict(p99 <= 100 and not errors)}"
              + (f"  ({errors} rounds failed)" if errors else ""))
        agent_rounds = [r for s in series[:2] for r in s.rounds]
        kept = min(r.kept for r in agent_rounds)
        ok = all(r.kept == others and r.new_pid and not r.strays for r in agent_rounds)
        print(f"  {others}/{others} PIDs kept, edited stream restarted, every reload: "
              f"min {kept}/{others} kept over {len(agent_rounds)} reloads  {c.verdict(ok)}")
    else:
        print("  not measured  FAIL")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=500, help="streams / programs (default 500)")
    p.add_argument("--reloads", type=int, default=20, help="agent reloads via POST /reload (default 20)")
    p.add_argument("--cli-reloads", type=int, default=5, help="agent reloads via `vasctl reload` (default 5)")
    p.add_argument("--sup-updates", type=int, default=5, help="`supervisorctl update` runs (default 5)")
    p.add_argument("--skip-supervisord", action="store_true")
    p.add_argument("--load-repeats", type=int, default=10, help="in-process config.load() timings (default 10)")
    p.add_argument("--period", type=float, default=5.0, help="seconds between progress blocks (default 5)")
    p.add_argument("--start-timeout", type=float, default=120.0, help="max wait for all children (default 120)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp directory (logs, configs)")
    args = p.parse_args(argv)

    rng = random.Random(args.seed)
    series: list[Series] = []
    notes: list[str] = []
    load_ms: list[float] = []
    with c.bench_tempdir("vas-bench-reload-", keep=args.keep_tmp) as base:
        try:
            load_ms = time_config_load(args, base)
            api, cli, note = run_agent(args, base, rng)
            series += [api, cli]
            notes.append(note)
            if not args.skip_supervisord:
                sup, note = run_supervisord(args, base, rng)
                series.append(sup)
                notes.append(note)
        except (KeyboardInterrupt, c.Interrupted):
            print("\ninterrupted; stopping everything", file=sys.stderr)
            return 130
    print()
    print(c.machine_line("end"))
    report(args, series, load_ms, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
