"""The cost of a progress report (issue 21 item 2), counted rather than timed: reports that
arrive spread over time share loop wakeups, and none of a report's fields or bytes is lost."""
from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from agent.supervise.ffmpeg import ProgressParser
from agent.supervise.process import COALESCE, Child

from .loopturns import counting_turns

pytestmark = pytest.mark.integration

#: One real FFmpeg 5.1 ``-progress pipe:1`` block (counters filled in per report).
BLOCK = ("frame={n}\nfps=25.00\nstream_0_0_q=2.0\nbitrate=385.3kbits/s\ntotal_size={size}\n"
         "out_time_us={us}\nout_time_ms={us}\nout_time=00:00:0{n}.000000\ndup_frames=0\n"
         "drop_frames=0\nspeed=1.00x\nprogress=continue\n")
CHILDREN = 10


def _write(fifos: list[Path], read: list[threading.Event], gap: float) -> None:
    """Writer thread: report 1 on every FIFO; once all are read, report 2 on each, ``gap`` apart.
    The FIFOs stay open until report 2 is read too: a child exiting is read at once."""
    fds = [os.open(f, os.O_WRONLY) for f in fifos]
    try:
        for n in (1, 2):
            for fd in fds:
                os.write(fd, BLOCK.format(n=n, size=1000 * n, us=1_000_000 * n).encode())
                if n == 2:
                    time.sleep(gap)
            if not read[n - 1].wait(10):
                return
    finally:
        for fd in fds:
            os.close(fd)


async def test_reports_spread_over_time_share_loop_wakeups(tmp_path):
    """Counted, not timed: a loaded host stretches the gaps between reports (a CI run saw a
    child's first two reports arrive together), but a wakeup that reads progress follows the
    one before by at least COALESCE - one per report would follow it by about 20 ms."""
    loop = asyncio.get_running_loop()
    turns = [0]
    fifos = [tmp_path / f"f{i}" for i in range(CHILDREN)]
    for f in fifos:
        os.mkfifo(f)
    parsers = [ProgressParser() for _ in fifos]
    reports: list[list] = [[] for _ in fifos]
    round_two: dict[int, float] = {}  # loop turn that read a second report -> its loop time
    read = [threading.Event(), threading.Event()]  # all reports 1, all reports 2

    def on_stdout(i: int):
        def feed(data: bytes) -> None:
            for report in parsers[i].feed(data):
                reports[i].append(report)
                if report.frame == 2:
                    round_two.setdefault(turns[0], loop.time())
        return feed

    with counting_turns(turns):
        children = [await Child.spawn(["/bin/sh", "-c", 'exec cat "$0"', str(f)], on_stdout=on_stdout(i),
                                      on_stderr=lambda line: None) for i, f in enumerate(fifos)]
        writer = threading.Thread(target=_write, args=(fifos, read, 0.02))
        try:
            writer.start()
            for _ in range(400):  # hang catcher: 20 s
                if all(reports):
                    read[0].set()  # each run's first output, read at once; the rest is batched
                if all(len(r) == 2 for r in reports):
                    read[1].set()
                    break
                await asyncio.sleep(0.05)
            assert [[(p.frame, p.total_size, p.out_time_us, p.fps) for p in r] for r in reports] == \
                [[(1, 1000, 1_000_000, 25.0), (2, 2000, 2_000_000, 25.0)]] * CHILDREN
            times = sorted(round_two.values())
            gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
            # call_later may fire up to the loop's clock resolution early
            assert all(gap >= COALESCE - 0.01 for gap in gaps), \
                f"{len(times)} loop wakeups for {CHILDREN} reports, {gaps} s apart"
        finally:
            for event in read:
                event.set()
            for child in children:
                child.kill()
            await asyncio.gather(*(child.wait() for child in children))
            writer.join(5)


async def test_the_last_report_before_an_exit_is_read_before_wait_returns(tmp_path):
    got: list[bytes] = []
    child = await Child.spawn(["/bin/sh", "-c", "printf 'first\\n'; sleep 0.5; printf 'last\\n'; exit 3"],
                              on_stdout=got.append, on_stderr=lambda line: None)
    assert await asyncio.wait_for(child.wait(), 10) == 3
    assert b"".join(got) == b"first\nlast\n"


async def test_a_reader_that_raises_on_the_last_report_still_lets_the_exit_through(tmp_path):
    """The last report is read when the child exits, before it is reaped: a reader raising
    there (a bug, a report it chokes on) left the child unreaped and wait() hung, so the
    stream never restarted.  The error goes to the loop's handler; the exit still counts."""
    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))

    def choke(data: bytes) -> None:
        if b"last" in data:
            raise ValueError("reader choked")

    try:
        child = await Child.spawn(["/bin/sh", "-c", "printf 'first\\n'; sleep 0.5; printf 'last\\n'; exit 3"],
                                  on_stdout=choke, on_stderr=lambda line: None)
        assert await asyncio.wait_for(child.wait(), 10) == 3
        assert child.returncode == 3  # reaped: no zombie
    finally:
        loop.set_exception_handler(None)
    assert any(isinstance(e.get("exception"), ValueError) for e in errors)


async def test_a_child_flooding_its_stdout_is_not_throttled_to_a_pipe_per_batch():
    """A batch every COALESCE read at most one 64 KiB pipe buffer: a child writing faster (an
    SFU app logging to stdout, a verbatim command) sat blocked in write() - 4 MiB took 12 s.
    A pipe found full is read at once while the flood lasts, and batched again after it."""
    got = [0]

    def count(data: bytes) -> None:
        got[0] += len(data)

    started = time.monotonic()
    child = await Child.spawn(["/bin/sh", "-c", "head -c 4194304 /dev/zero; sleep 0.6; printf 'progress=end\\n'"],
                              on_stdout=count, on_stderr=lambda line: None)
    while got[0] < 4 << 20 and time.monotonic() - started < 15:
        await asyncio.sleep(0.02)
    assert got[0] >= 4 << 20 and time.monotonic() - started < 4, \
        f"{got[0]} bytes in {time.monotonic() - started:.1f}s"
    assert await asyncio.wait_for(child.wait(), 10) == 0
    assert got[0] == (4 << 20) + len("progress=end\n")
