"""Agent CPU per FFmpeg progress report, next to its floors, from the same run.

What it measures
    N real :class:`agent.stream.Stream` objects (stall watch armed) each supervise a
    child that forwards, one write per report, blocks of FFmpeg ``-progress pipe:1``
    output (the child is ``cat FIFO``; one writer process feeds all FIFOs, evenly
    spread over --period).  The blocks are a real FFmpeg block (captured at start from
    ``ffmpeg -f lavfi testsrc ... -progress pipe:1``) with its counters advanced per
    report.  Path measured: event loop wakeup -> Child._read -> ProgressParser.feed ->
    Stream._on_progress (+ StallWatch.touch, the snapshot's dirty flag).
    ours        this process's CPU (user+sys) over the window / reports handled
    loop floor  the same children and writer, but the loop callback is a bare
                os.read + bytes.split (what any asyncio reader pays per wakeup)
    bare floor  os.read + bytes.split of the same block from a pipe, no loop (timed alone)
    The 200-camera share of one core at a 1 s report period is ours x 200 / 1 s.

How to run
    .venv/bin/python bench/progress.py                      # --n 200 --period 1 --seconds 10
    .venv/bin/python bench/progress.py --n 50 --seconds 5   # quick check
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

from agent.config.model import RestartPolicy  # noqa: E402
from agent.config.model import RecordingConfig, StreamConfig  # noqa: E402
from agent.supervise.states import StreamState  # noqa: E402
from agent.supervise.stream import Host, Stream  # noqa: E402

_COUNTERS = re.compile(rb"^(frame|total_size|out_time_us|out_time_ms|out_time)=.*$", re.M)


def real_block() -> bytes:
    """The last block a real FFmpeg writes with ``-progress pipe:1`` (``end`` made ``continue``)."""
    out = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-loglevel", "error", "-f", "lavfi",
                          "-i", "testsrc=size=320x240:rate=25", "-t", "1", "-c:v", "mpeg4", "-f", "mpegts",
                          "-progress", "pipe:1", "-y", "/dev/null"],
                         capture_output=True, timeout=60, check=True).stdout
    last = out.rstrip(b"\n").rsplit(b"progress=", 2)
    body = last[-2].rsplit(b"\n", 1)[0].split(b"progress=continue\n")[-1] if len(last) > 2 else last[0]
    return body.lstrip(b"\n").rstrip(b"\n") + b"\nprogress=continue\n"


def block(template: bytes, n: int) -> bytes:
    """``template`` with the counters of report ``n`` (frame = 25 n, so reports = frame / 25)."""
    values = {b"frame": b"%d" % (25 * n), b"total_size": b"%d" % (48128 * n),
              b"out_time_us": b"%d" % (1_000_000 * n), b"out_time_ms": b"%d" % (1_000_000 * n),
              b"out_time": b"%02d:%02d:%02d.000000" % (n // 3600, n // 60 % 60, n % 60)}
    return _COUNTERS.sub(lambda m: m.group(1) + b"=" + values[m.group(1)], template)


def writer_main(fifo_dir: str, n: int, period: float) -> None:
    """Child process: one block per FIFO per period, writes spread evenly; until SIGTERM."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    template = Path(fifo_dir, "block").read_bytes()
    fds = [os.open(Path(fifo_dir, f"f{i}"), os.O_WRONLY) for i in range(n)]
    step, k, t = period / n, 1, time.monotonic()
    while True:  # a BrokenPipeError ends it when the bench stops its readers
        for fd in fds:
            os.write(fd, block(template, k))
            t += step
            time.sleep(max(0.0, t - time.monotonic()))
        k += 1


def stream_config(i: int, fifo: Path) -> StreamConfig:
    """A stream whose "FFmpeg" forwards the FIFO's blocks; stall watch on (20 s)."""
    policy = RestartPolicy(initial_delay=0.05, multiplier=2, max_delay=0.5, jitter=0, stable_after=60)
    return StreamConfig(id=f"cam-{i}", url=None, command=("/bin/sh", "-c", 'exec cat "$0"', str(fifo), "{progress}"),
                        restart=policy, stall_timeout=20, stop_timeout=2,
                        recording=RecordingConfig(enabled=False))


async def _window(seconds: float, count) -> tuple[float, float, int]:
    """User and system CPU seconds of this process over ``seconds``, and the reports counted."""
    await asyncio.sleep(1.0)  # settle: every child forwarding
    t0, r0 = resource.getrusage(resource.RUSAGE_SELF), count()
    await asyncio.sleep(seconds)
    t1 = resource.getrusage(resource.RUSAGE_SELF)
    return t1.ru_utime - t0.ru_utime, t1.ru_stime - t0.ru_stime, count() - r0


async def run_ours(tmp: Path, n: int, seconds: float) -> tuple[float, float, int]:
    """CPU seconds and reports over the window, through real Streams."""
    dirty = [False]
    host = Host(ffmpeg="ffmpeg", recordings_root=tmp, secrets=frozenset(),
                on_change=lambda state: dirty.__setitem__(0, True))  # the publisher's dirty flag
    streams = [Stream(stream_config(i, tmp / f"f{i}"), host) for i in range(n)]
    for s in streams:
        s.start()
    try:
        for _ in range(600):
            if all(s.state is StreamState.LIVE for s in streams):
                break
            await asyncio.sleep(0.05)
        else:
            raise SystemExit("not all streams live within 30 s")
        return await _window(seconds, lambda: sum(s.progress.frame // 25 for s in streams if s.progress))
    finally:
        await asyncio.gather(*(s.close() for s in streams))


async def run_loop_floor(tmp: Path, n: int, seconds: float) -> tuple[float, float, int]:
    """CPU seconds and reads over the window: bare add_reader callbacks on the same pipes."""
    loop, reads = asyncio.get_running_loop(), [0]
    procs = [subprocess.Popen(["cat", str(tmp / f"f{i}")], stdout=subprocess.PIPE) for i in range(n)]

    def on_read(fd: int) -> None:
        data = os.read(fd, 65536)
        data.split(b"\n")
        reads[0] += 1

    try:
        for p in procs:
            assert p.stdout is not None
            os.set_blocking(p.stdout.fileno(), False)
            loop.add_reader(p.stdout.fileno(), on_read, p.stdout.fileno())
        return await _window(seconds, lambda: reads[0])
    finally:
        for p in procs:
            assert p.stdout is not None
            loop.remove_reader(p.stdout.fileno())
            p.kill()
            p.wait()
            p.stdout.close()


def bare_floor(data: bytes, rounds: int = 20000) -> float:
    """µs of os.read + bytes.split of one block (the pipe is written outside the timing)."""
    r, w = os.pipe()
    spent = 0
    try:
        for _ in range(rounds):
            os.write(w, data)
            t0 = time.perf_counter_ns()
            os.read(r, 65536).split(b"\n")
            spent += time.perf_counter_ns() - t0
    finally:
        os.close(r)
        os.close(w)
    return spent / rounds / 1000


def measure(kind: str, tmp: Path, n: int, period: float, seconds: float) -> float:
    """µs of CPU per report for ``kind`` (``ours`` or ``loop``), with a fresh writer."""
    for i in range(n):
        (tmp / f"f{i}").unlink(missing_ok=True)
        os.mkfifo(tmp / f"f{i}")
    writer = subprocess.Popen([sys.executable, __file__, "--writer", str(tmp), str(n), f"{period:g}"])
    try:
        run = run_ours if kind == "ours" else run_loop_floor
        user, system, reports = asyncio.run(run(tmp, n, seconds))
    finally:
        writer.terminate()
        writer.wait()
    print(f"[{kind}] {reports} reports, CPU {(user + system) * 1000:.0f} ms (user {user * 1000:.0f}, "
          f"sys {system * 1000:.0f})", flush=True)
    return (user + system) / max(reports, 1) * 1e6


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        try:
            writer_main(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        except BrokenPipeError:
            pass
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="streams (default 200)")
    p.add_argument("--period", type=float, default=1.0, help="seconds between one stream's reports (default 1)")
    p.add_argument("--seconds", type=float, default=10.0, help="measuring window per run (default 10)")
    p.add_argument("--rounds", type=int, default=1, help="alternate ours / loop floor this many times")
    args = p.parse_args()
    with c.bench_tempdir("vas-bench-progress-", keep=False) as tmp:
        template = real_block()
        (tmp / "block").write_bytes(template)
        print(f"real FFmpeg block ({len(template)} bytes, {template.count(b'=')} fields):\n"
              + template.decode().rstrip())
        ours, loop = [], []
        for _ in range(args.rounds):
            ours.append(measure("ours", tmp, args.n, args.period, args.seconds))
            loop.append(measure("loop", tmp, args.n, args.period, args.seconds))
        bare = bare_floor(block(template, 1000))
    o, lf = min(ours), min(loop)
    share = o * 200 / 1e6 * 100
    print(f"\nCPU per progress report, {args.n} streams, a report every {args.period:g} s each "
          f"(best of {args.rounds}):")
    print(f"  ours {o:.1f} us | loop floor (add_reader + os.read + split) {lf:.1f} us | "
          f"bare os.read + split {bare:.1f} us | ours - loop floor {o - lf:.1f} us")
    print(f"  200 cameras at 1 s: {share:.2f} % of one core (floor {lf * 200 / 1e4:.2f} %)")
    print(f"  target <= 50 us: {c.verdict(o <= 50)}; 200 cameras <= 1 %: {c.verdict(share <= 1)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
