"""CPU per /readyz inside aiohttp, in-process: the exporter's app against a bare aiohttp JSON handler.

What it measures
    The exporter's real app (exporter.app.create_app, a 500-stream snapshot as
    bench/exporter.py writes it) and the peer (FLOOR's handler: a fixed JSON
    body) are served by their own AppRunner in one process.  Raw HTTP/1.1
    requests are fed to each runner's real protocol (aiohttp's parser, the
    request task, the middleware, the handler, the headers and the body
    written) over an in-memory transport, one request at a time; the CPU
    (time.process_time) per request is taken over --n requests, in --rounds
    alternating rounds.  No socket and no other process take part, so the
    figure moves little with the machine's load, unlike wrk's: it is what the
    exporter's code adds per request, the kernel's share left out.  The
    minimum and the median over the rounds are printed, and the exporter's
    excess over the peer.  --profile FILE writes a cProfile of --n exporter
    requests.  --parts adds two rows to split the excess: the peer's handler
    served by the exporter's app (its routing and the frame every route has,
    exporter/frame.py), and for scale the peer behind a middleware that does
    nothing (what aiohttp's chain costs any app with a middleware; the
    exporter has none).  --instructions [N] counts instead the machine
    instructions per request under valgrind's callgrind (N requests of each,
    the difference of two runs so start-up cancels out): a count, not a time,
    so the host's load and throttling do not move it.

    Everything runs on the exporter's event loop (uvloop; exporter/eventloop.py),
    so the peer is like for like; --loop asyncio runs both on asyncio's own.
    --instructions also counts the peer on asyncio's loop: issue 21's anchor, a
    bare aiohttp app as aiohttp runs it by default.

How to run
    .venv/bin/python bench/readyz_cpu.py                 # --n 5000 --rounds 15
    .venv/bin/python bench/readyz_cpu.py --path /livez
    .venv/bin/python bench/readyz_cpu.py --instructions    # ~6 minutes (valgrind)
    .venv/bin/python bench/readyz_cpu.py --loop asyncio    # both on asyncio's own loop
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from agent import snapshot  # noqa: E402
from agent.config.exporter import Settings  # noqa: E402
from exporter.app import CONTEXT, create_app  # noqa: E402
from exporter.eventloop import CHOICES, chosen, loop_factory  # noqa: E402

BODY = b'{"status":"ready","failing":[]}'


async def peer_handler(request: web.Request) -> web.Response:
    """bench/exporter.py's FLOOR."""
    return web.Response(body=BODY, content_type="application/json")


class Transport(asyncio.Transport):
    """Keeps what the server writes; wakes the driver when a response is out."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.waiter: asyncio.Future[None] | None = None
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:  # type: ignore[override]
        self.out.append(bytes(data))
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def writelines(self, lines) -> None:  # type: ignore[no-untyped-def]
        self.write(b"".join(lines))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default=None):  # type: ignore[no-untyped-def]
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def exporter_app(tmp: Path) -> web.Application:
    """The exporter over bench/exporter.py's 500-stream snapshot (its recordings root empty)."""
    spec = importlib.util.spec_from_file_location("bench_exporter", ROOT / "bench" / "exporter.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    runtime = tmp / "run"
    runtime.mkdir()
    data = bench.fake_snapshot(500)
    data["config"]["recordings_root"] = str(tmp / "recordings")
    snapshot.write_atomic(runtime / snapshot.SNAPSHOT_NAME, data)
    return create_app(Settings(config_path=tmp / "streams.yaml", runtime_dir=runtime, tokens_file=tmp / "tokens",
                               stale_after=3600.0))


async def connect(app: web.Application) -> tuple[web.AppRunner, object, Transport]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=15.0)
    await runner.setup()
    assert runner.server is not None
    protocol, transport = runner.server(), Transport()
    protocol.connection_made(transport)
    return runner, protocol, transport


async def drive(protocol, transport: Transport, path: str, n: int) -> tuple[float, bytes]:  # type: ignore[no-untyped-def]
    """CPU µs per request over ``n`` requests, and the last answer."""
    loop, request = asyncio.get_running_loop(), f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    started = time.process_time()
    for _ in range(n):
        transport.waiter = loop.create_future()
        protocol.data_received(request)
        await transport.waiter
    us = (time.process_time() - started) / n * 1e6
    last = b"".join(transport.out[-2:])
    transport.out.clear()
    return us, last


@web.middleware
async def pass_through(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """A middleware that does nothing: what having any middleware costs in aiohttp's chain."""
    return await handler(request)


#: --parts: the peer's handler in the exporter's app (its routing, and the frame every route has).
PEER_ROUTE = "/bench-peer-handler"


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="vas-bench-readyz-") as tmp:
        peer = web.Application()
        peer.router.add_get("/readyz", peer_handler)
        app = exporter_app(Path(tmp))
        targets = {"exporter": (app, args.path), "peer": (peer, "/readyz")}
        if args.parts:
            layered = web.Application(middlewares=[pass_through])
            layered.router.add_get("/readyz", peer_handler)
            from exporter.frame import Routes
            Routes(app, app[CONTEXT].metrics.requests.observe, lambda request: None).add_get(PEER_ROUTE, peer_handler)
            targets |= {"peer + a pass-through middleware": (layered, "/readyz"),
                        "exporter's app + the peer's handler": (app, PEER_ROUTE)}
        runners: dict[web.Application, tuple[web.AppRunner, object, Transport]] = {}
        for target, _ in targets.values():
            if target not in runners:
                runners[target] = await connect(target)
        gc.collect()
        gc.freeze()  # as vas-exporter does after start-up
        figures: dict[str, list[float]] = {name: [] for name in targets}
        try:
            for target, path in targets.values():
                await drive(*runners[target][1:], path, 1000)
            order = list(targets.items())
            for i in range(args.rounds):  # alternating: a busy moment lands on all
                for name, (target, path) in order if i % 2 == 0 else order[::-1]:
                    us, last = await drive(*runners[target][1:], path, args.n)
                    figures[name].append(us)
                    if not last.startswith(b"HTTP/1.1 200"):
                        raise SystemExit(f"{name} {path} answered {last[:60]!r}")
            if args.profile:
                import cProfile
                profile = cProfile.Profile()
                profile.enable()
                await drive(*runners[app][1:], args.path, args.n)
                profile.disable()
                profile.dump_stats(args.profile)
        finally:
            for runner, _, _ in runners.values():
                await runner.cleanup()
    report(args, figures)


#: --instructions: requests before the counted ones (warm-up), and the smaller run's count.
WARM, BASE = 300, 200


async def count(args: argparse.Namespace) -> None:
    """Run under callgrind by ``instructions``: WARM requests, then ``--n`` more, to ``--count``'s target."""
    with tempfile.TemporaryDirectory(prefix="vas-bench-readyz-") as tmp:
        if args.count == "peer":
            app, path = web.Application(), "/readyz"
            app.router.add_get(path, peer_handler)
        else:
            app, path = exporter_app(Path(tmp)), args.path
        runner, protocol, transport = await connect(app)
        gc.collect()
        gc.freeze()
        try:
            await drive(protocol, transport, path, WARM)
            _, last = await drive(protocol, transport, path, args.n)
        finally:
            await runner.cleanup()
    if not last.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"{args.count} {path} answered {last[:60]!r}")


def instructions(args: argparse.Namespace) -> None:
    """Instructions per request of the exporter and of the peer: two runs of each under callgrind
    (BASE and BASE + N requests after the same start-up); their difference over N."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("valgrind not found: apt-get install valgrind (./install.sh --dev installs it)")
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every run
    per: dict[str, float] = {}
    targets = {"exporter": args.loop, "peer": args.loop}
    if args.loop != "asyncio":
        targets["asyncio peer"] = "asyncio"  # issue 21's anchor: aiohttp as it runs by default
    for target, loop in targets.items():
        counted = []
        for n in (BASE, BASE + args.instructions):
            run = subprocess.run([valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                                  __file__, "--count", target.split()[-1], "--loop", loop, "--n", str(n),
                                  "--path", args.path], capture_output=True, text=True, env=env)
            found = re.search(r"Collected : (\d+)", run.stderr)
            if run.returncode or found is None:
                sys.exit(f"callgrind run of {target} failed:\n{run.stderr[-2000:]}")
            counted.append(int(found.group(1)))
        per[target] = (counted[1] - counted[0]) / args.instructions
    ours, peer = per["exporter"], per["peer"]
    print(f"instructions per request (callgrind, {args.instructions} requests each, user space only), "
          f"on {args.loop}'s loop:")
    print(f"  vas-exporter {args.path} {ours / 1000:7.1f}k   bare aiohttp JSON (peer) {peer / 1000:7.1f}k   "
          f"excess {(ours - peer) / 1000:5.1f}k   peer/exporter {peer / ours:.0%}")
    if "asyncio peer" in per:
        anchor = per["asyncio peer"]
        print(f"  the peer on asyncio's loop (issue 21's anchor) {anchor / 1000:7.1f}k   "
              f"peer/exporter {anchor / ours:.0%}")
    print(json.dumps({"loop": args.loop, "exporter_instructions": round(ours), "peer_instructions": round(peer),
                      **({"asyncio_peer_instructions": round(per["asyncio peer"])} if "asyncio peer" in per else {})}))


def report(args: argparse.Namespace, figures: dict[str, list[float]]) -> None:
    ours, peer = figures["exporter"], figures["peer"]
    print(f"CPU per request in-process (aiohttp's protocol, no socket, {args.loop}'s loop), "
          f"{args.rounds} rounds of {args.n}:")
    for label, pick in (("min", min), ("median", statistics.median)):
        a, b = pick(ours), pick(peer)
        print(f"  {label:6} vas-exporter {args.path} {a:6.2f} us   bare aiohttp JSON (peer) {b:6.2f} us   "
              f"excess {a - b:5.2f} us   peer/exporter {b / a:.0%}")
    parts = [name for name in figures if name not in ("exporter", "peer")]
    if parts:
        print("  where the excess goes (min; each row's excess over the peer, same rounds):")
        for name in parts:
            print(f"    {name:38} {min(figures[name]):6.2f} us   +{min(figures[name]) - min(peer):5.2f} us")
    print(json.dumps({"exporter_us": round(min(ours), 2), "peer_us": round(min(peer), 2)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--path", default="/readyz", help="the exporter's route (the peer always answers /readyz)")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of --n exporter requests")
    parser.add_argument("--parts", action="store_true",
                        help="also the peer's handler in the exporter's app (its routing and frame), and the peer "
                             "behind a pass-through middleware (what any middleware costs, for scale)")
    parser.add_argument("--instructions", type=int, nargs="?", const=1000, metavar="N",
                        help="instructions per request under callgrind, N requests each (default 1000)")
    parser.add_argument("--loop", choices=CHOICES, default=chosen(),
                        help="the event loop (default: the exporter's, VAS_EXPORTER_LOOP or uvloop)")
    parser.add_argument("--count", choices=("exporter", "peer"), help=argparse.SUPPRESS)  # the callgrind child
    parsed = parser.parse_args()
    if parsed.instructions:
        instructions(parsed)
    else:
        with asyncio.Runner(loop_factory=loop_factory(parsed.loop)) as runner:
            runner.run(count(parsed) if parsed.count else main(parsed))
