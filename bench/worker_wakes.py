"""How many worker threads serve checks that fall due together, against waking a thread per call.

What it measures
    Every stream's recording is looked at every 2 s on the agent's worker threads
    (``agent/blocking.py``: ``in_thread``).  Streams started together stay in step, so their
    looks come in one tick of the loop.  Waking a thread per queued call (the rule before)
    spread each round over as many threads as calls, and each thread keeps glibc's cache of
    the chunks it freed: in a 20-stream soak every worker woke ~200 times a minute and the
    threads' caches grew ~1 MiB/h.  Now calls queue behind the thread already woken, and a
    lookout wakes one more whenever no call was taken off the queue for ``LOOKOUT``.

    For each rule (``ours``: the agent's ``Workers``; ``before``: the same pool waking a thread
    for every queued call) it runs --streams looks (an ``os.stat``) every --interval seconds,
    in step or spread over the interval, beside one retention-like call of --busy-ms of Python
    every 0.1 s, for --seconds; then one round where the first call hangs (a FIFO nobody writes,
    a hung mount's stand-in) to show the calls behind it still run.  It prints the threads that
    served calls, the calls of the busiest ones, and the wait from submit to start (p50, p99, max).

How to run
    .venv/bin/python bench/worker_wakes.py
    .venv/bin/python bench/worker_wakes.py --streams 50 --seconds 30
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from agent import blocking  # noqa: E402
from agent.blocking import Workers, in_thread  # noqa: E402


class WakePerCall(Workers):
    """The rule before: a thread woken (or started) for every queued call no idle thread takes."""

    def submit(self, job: blocking._Job, name: str) -> None:
        with self._lock:
            waiting = self._queued + 1 - (self._idle - len(self._parked))
            wakes = [self._parked.pop() for _ in range(min(waiting, len(self._parked)))]
            if waiting > len(wakes) and self._room():
                self._start()
            self._queued += 1
            self._jobs.append(job)
        for wake in wakes:
            wake.release()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


async def run(workers: Workers, args: argparse.Namespace, in_step: bool) -> dict:
    blocking._workers = workers
    served: collections.Counter[int] = collections.Counter()
    waits: list[float] = []

    def look(submitted: float) -> None:
        waits.append(time.monotonic() - submitted)
        served[threading.get_ident()] += 1
        os.stat("/")

    def busy() -> None:
        served[threading.get_ident()] += 1
        end = time.perf_counter() + args.busy_ms / 1000
        while time.perf_counter() < end:
            pass

    async def stream(i: int) -> None:
        await asyncio.sleep(0 if in_step else args.interval * i / args.streams)
        while True:
            submitted = time.monotonic()
            await in_thread(lambda at=submitted: look(at), timeout=10, name="look", key=f"look:{i}")
            await asyncio.sleep(args.interval)

    async def retention() -> None:
        while True:
            await in_thread(busy, timeout=None, name="retention")
            await asyncio.sleep(0.1)

    tasks = [asyncio.ensure_future(stream(i)) for i in range(args.streams)] + [asyncio.ensure_future(retention())]
    await asyncio.sleep(args.seconds)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"threads": len(served), "busiest": sorted(served.values(), reverse=True)[:5], "waits": waits,
            "started": workers.threads}


async def behind_a_hung_call(workers: Workers, streams: int) -> tuple[float, int]:
    """A round whose first call hangs: seconds until every other call of the round has run."""
    blocking._workers = workers
    with tempfile.TemporaryDirectory(prefix="vas-wakes-") as tmp:
        fifo = Path(tmp) / "hung"
        os.mkfifo(fifo)
        hung = asyncio.ensure_future(in_thread(lambda: open(fifo).read(), timeout=5, name="hung"))
        started = time.monotonic()
        await asyncio.gather(*(in_thread(lambda: os.stat("/"), timeout=5, name="look") for _ in range(streams - 1)))
        took = time.monotonic() - started
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # releases the hung call
        os.close(fd)
        await hung
    return took, workers.threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between a stream's looks")
    parser.add_argument("--seconds", type=float, default=20.0, help="per rule and phase")
    parser.add_argument("--busy-ms", type=float, default=5.0, help="the retention-like call's Python time")
    args = parser.parse_args(argv)
    print(f"{args.streams} streams looked at every {args.interval:g} s for {args.seconds:g} s, beside a "
          f"{args.busy_ms:g} ms call every 0.1 s (LOOKOUT {blocking.LOOKOUT * 1000:g} ms)")
    print(f"{'rule':>7} {'looks':>7}  {'threads':>7}  {'calls of the busiest':<28} wait p50 / p99 / max")
    for in_step in (True, False):
        for label, make in (("ours", Workers), ("before", WakePerCall)):
            r = asyncio.run(run(make(), args, in_step))
            w = r["waits"]
            print(f"{label:>7} {'in step' if in_step else 'spread':>7}  {r['threads']:>7}  "
                  f"{str(r['busiest']):<28} {pct(w, 50) * 1e3:.2f} / {pct(w, 99) * 1e3:.2f} / "
                  f"{max(w) * 1e3:.2f} ms")
    for label, make in (("ours", Workers), ("before", WakePerCall)):
        took, threads = asyncio.run(behind_a_hung_call(make(), args.streams))
        print(f"{label:>7}: a round whose first call hangs: the other {args.streams - 1} ran in "
              f"{took * 1e3:.1f} ms on {threads} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
