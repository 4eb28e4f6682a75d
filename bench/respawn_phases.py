"""Where a respawn's time goes inside vas-agent: the phases between a child's death and its
replacement announcing itself, measured in the agent's own process.

What it measures
    bench/respawn.py's agent run (N fake FFmpeg children, SIGKILL of one process group at a
    time), with the agent started as ``respawn_phases.py --agent-child``: the real agent with
    timing probes wrapped around its own functions (nothing replaced).  Per kill:
        exit         kill -> Child._on_exit (the pidfd seen by the loop)
        wait         _on_exit -> Child.wait() returns
        bookkeeping  wait() returned -> the backoff starts (state, log line, backoff policy)
        backoff      inside Stream._back_off (configured 1 ms; the loop's timers round up to 1 ms)
        to spawn     backoff over -> Child.spawn entered (state, argv, limits)
        popen        the Popen call: vfork + exec of the first program, the loop blocked
        exec chain   Popen returned -> the child announced itself on the bench's FIFO
                     (setpriv -> parent-check sh -> the script; plus the bench's read)
    and per snapshot flush: the event loop's time spent rendering and writing it.  Phases are
    p50 / p90 / max over the kills; the same run's total (kill -> announce) is printed with them.

How to run
    .venv/bin/python bench/respawn_phases.py                 # --n 200 --kills 100
    Run it from another checkout (git archive) with PYTHONPATH pointing there to compare code.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
OUT_ENV = "RESPAWN_PHASES_OUT"


# -- the agent with probes (runs as ``respawn_phases.py --agent-child --config ...``) ----------
def _probe_agent() -> int:
    from agent import publisher as pub
    from agent.cli import agent_main
    from agent.supervise import process, stream

    rec: dict[str, list] = {k: [] for k in ("exit", "waited", "bo_in", "bo_out", "spawn_in", "popen", "snap")}
    now = time.monotonic

    def after(cls, name: str, key: str) -> None:  # note the time a method was entered
        orig = getattr(cls, name)

        def wrapper(self, *a, **k):
            rec[key].append(now())
            return orig(self, *a, **k)
        setattr(cls, name, wrapper)

    def timed(cls, name: str, key: str) -> None:  # note when a method returned and how long it took
        orig = getattr(cls, name)

        def wrapper(self, *a, **k):
            t = time.perf_counter()
            try:
                return orig(self, *a, **k)
            finally:
                rec[key].append((now(), time.perf_counter() - t))
        setattr(cls, name, wrapper)

    after(process.Child, "_on_exit", "exit")
    orig_wait, orig_bo, orig_spawn = process.Child.wait, stream.Stream._back_off, process.Child.spawn.__func__

    async def wait(self):
        status = await orig_wait(self)
        rec["waited"].append(now())
        return status

    async def back_off(self, delay):
        rec["bo_in"].append(now())
        await orig_bo(self, delay)
        rec["bo_out"].append(now())

    async def spawn(cls, *a, **k):
        rec["spawn_in"].append(now())
        return await orig_spawn(cls, *a, **k)

    process.Child.wait, stream.Stream._back_off = wait, back_off  # type: ignore[method-assign]
    process.Child.spawn = classmethod(spawn)  # type: ignore[method-assign, assignment]
    timed(process.subprocess.Popen, "__init__", "popen")
    for name in ("write", "flush"):  # flush: the code that renders on the loop and writes from a thread
        if hasattr(pub.Publisher, name):
            timed(pub.Publisher, name, "snap")
    import atexit
    atexit.register(lambda: Path(os.environ[OUT_ENV]).write_text(json.dumps(rec)))
    sys.argv = ["vas-agent", *sys.argv[2:]]
    return agent_main()


# -- the bench: respawn.py's agent run, then the phases per kill --------------------------------
def _first_after(values: list, t: float, key=lambda v: v):
    return next((v for v in values if key(v) >= t), None)


def _phases(rec: dict[str, list], kills: list[float], delays_ms: list[float]) -> dict[str, list[float]]:
    names = ("exit", "wait", "bookkeeping", "backoff", "to spawn", "popen", "exec chain", "total")
    out: dict[str, list[float]] = {k: [] for k in names}
    for t0, d in zip(kills, delays_ms):
        ex, wt = _first_after(rec["exit"], t0), _first_after(rec["waited"], t0)
        bi, bo = _first_after(rec["bo_in"], t0), _first_after(rec["bo_out"], t0)
        si, po = _first_after(rec["spawn_in"], t0), _first_after(rec["popen"], t0, key=lambda v: v[0])
        if None in (ex, wt, bi, bo, si, po):
            continue
        marks = {"exit": ex - t0, "wait": wt - ex, "bookkeeping": bi - wt, "backoff": bo - bi,
                 "to spawn": si - bo, "popen": po[1], "exec chain": t0 + d / 1000 - po[0], "total": d / 1000}
        for k, v in marks.items():
            out[k].append(v * 1000)
    return out


def _row(name: str, values: list[float]) -> str:
    v = sorted(values)
    if not v:
        return f"{name:<13}{'-':>9}"
    return f"{name:<13}{v[len(v) // 2]:>9.2f}{v[len(v) * 9 // 10]:>9.2f}{v[-1]:>9.2f}"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--agent-child":
        return _probe_agent()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    sys.path.insert(0, str(BENCH))
    import _common as c
    import psutil
    import respawn as r

    kills: list[float] = []
    real_killpg = os.killpg

    def killpg(pid: int, sig: int) -> None:
        kills.append(time.monotonic())
        real_killpg(pid, sig)
    r.os.killpg = killpg  # type: ignore[attr-defined]
    out = Path(tempfile.mkdtemp(prefix="vas-bench-phases-")) / "probes.json"

    def start(self) -> None:  # respawn.System.start for the agent, with this script's probes
        cfg = self.tmp / "streams.yaml"
        c.write_atomic(cfg, c.streams_yaml(self.n, self.fifo, self.period, self.tmp / "run", self.tmp / "rec"))
        self.popen = c.spawn([sys.executable, __file__, "--agent-child", "--config", str(cfg)],
                             self.tmp / "agent.log", env={**os.environ, OUT_ENV: str(out)})
        self.proc = psutil.Process(self.popen.pid)
    r.System.start = start  # type: ignore[method-assign]
    ns = argparse.Namespace(n=args.n, kills=args.kills, period=5.0, idle=0.5, gap=0.1, kill_timeout=10.0,
                            kill_budget=120.0, start_timeout=60.0, seed=args.seed)
    print(c.machine_line())
    with c.bench_tempdir("vas-bench-phases-", keep=False) as base:
        res = r.run_system("agent", ns, base)
    rec = json.loads(out.read_text())
    c.rmtree(out.parent)
    phases = _phases(rec, kills, res.delays_ms)
    print(f"\nvas-agent respawn phases, N={args.n}, {len(phases['total'])} kills measured "
          f"({res.timeouts} timeouts); ms")
    print(f"{'phase':<13}{'p50':>9}{'p90':>9}{'max':>9}")
    for name, values in phases.items():
        print(_row(name, values))
    snaps = [d * 1000 for _, d in rec["snap"]]
    print(_row("snapshot", snaps) + f"   (the loop's time per snapshot, {len(snaps)} of them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
