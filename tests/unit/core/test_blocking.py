"""Blocking calls run in a thread with a timeout, so that a hung file system cannot stall the event loop."""
from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from functools import partial

import pytest

from agent import blocking
from agent.blocking import Workers, in_thread


async def test_a_call_that_hangs_on_a_fifo_times_out_and_leaves_the_loop_free(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    with pytest.raises(TimeoutError):
        await in_thread(lambda: open(fifo).read(), timeout=0.5, name="test-fifo")
    ticker.cancel()
    assert ticks > 10  # the event loop kept running meanwhile
    stuck = [t for t in threading.enumerate() if t.name == "test-fifo"]
    assert stuck and stuck[0].daemon  # abandoned, and it cannot hold up the exit
    with open(fifo, "w"):
        pass  # release the thread


async def test_calls_reuse_long_lived_threads():
    """A thread per call made glibc hand out and fragment malloc arenas: the agent's RSS grew
    ~14 MiB/h with 50 streams checking their directories every 2 s.  Calls reuse a few threads."""
    # this process's earlier tests may have started some, and a written-off one (the FIFO's) may serve again
    before = blocking._workers.threads + blocking._workers.written_off
    seen = {await in_thread(threading.get_native_id, timeout=5, name="test-reuse") for _ in range(200)}
    assert len(seen) <= before + 1, f"{len(seen)} threads for 200 calls one after another"
    assert blocking._workers.threads <= before + 1
    # slow calls at the same time each get a thread (one more every LOOKOUT while none is taken): none
    # waits for another to end
    at_once = await asyncio.gather(*(in_thread(lambda: time.sleep(0.5) or threading.get_native_id(), timeout=5,
                                               name="test-reuse") for _ in range(8)))
    assert len(set(at_once)) == 8
    again = {await in_thread(threading.get_native_id, timeout=5, name="test-reuse") for _ in range(50)}
    assert again <= seen | set(at_once)  # and those threads stay for the next calls


async def test_a_call_stuck_on_a_hung_file_does_not_hold_up_the_others(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    stuck = asyncio.ensure_future(in_thread(lambda: open(fifo).read(), timeout=30, name="test-stuck"))
    await asyncio.sleep(0.1)
    assert [await in_thread(lambda: 7, timeout=2, name="test-after") for _ in range(20)] == [7] * 20
    with open(fifo, "w"):
        pass  # release the thread
    assert await stuck == ""


def test_when_every_thread_is_stuck_calls_queue_up_to_a_bound_then_fail_at_once():
    release = threading.Event()
    ran: list[int] = []
    workers = Workers(max_threads=2, max_queued=3)
    running = threading.Semaphore(0)
    for _ in range(2):
        workers.submit(lambda: running.release() or release.wait(), "stuck")  # type: ignore[func-returns-value]
    assert running.acquire(timeout=5) and running.acquire(timeout=5)  # both threads hold a stuck call
    for i in range(3):
        workers.submit(lambda i=i: ran.append(i), "queued")  # type: ignore[misc]
    assert workers.threads == 2
    with pytest.raises(TimeoutError, match="all 2 worker threads are stuck"):
        workers.submit(lambda: ran.append(99), "one too many")
    release.set()
    deadline = time.monotonic() + 5
    while len(ran) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(ran) == [0, 1, 2]


async def test_a_call_given_up_while_queued_is_not_run(monkeypatch):
    release = threading.Event()
    workers = Workers(max_threads=1)
    monkeypatch.setattr(blocking, "_workers", workers)
    ran = []
    workers.submit(release.wait, "stuck")
    with pytest.raises(TimeoutError):
        await in_thread(lambda: ran.append(1), timeout=0.2, name="test-late")
    release.set()
    assert await in_thread(lambda: 5, timeout=5, name="test-next") == 5  # the queue has moved past it
    assert ran == []


async def test_calls_stuck_on_a_hung_mount_do_not_starve_the_rest_of_the_agent(tmp_path, monkeypatch):
    """A recording directory on a hung mount, checked every 2 s: each check a caller gave up on
    used to keep its thread, so after MAX_THREADS checks a config reload (or a healthy disk's
    stream) waited in the queue and failed as if its own file hung.  Written-off threads no
    longer count: the reload still gets a thread."""
    workers = Workers(max_threads=4)
    monkeypatch.setattr(blocking, "_workers", workers)
    fifo = tmp_path / "hung"
    os.mkfifo(fifo)
    try:
        for _ in range(6):  # more stuck checks than threads
            with pytest.raises(TimeoutError):
                await in_thread(lambda: open(fifo).read(), timeout=0.1, name="test-hung")
        assert await in_thread(lambda: "parsed", timeout=2, name="vas-config") == "parsed"
        assert workers.threads <= 4 and workers.written_off == 6
    finally:
        deadline = time.monotonic() + 5
        while workers.written_off and time.monotonic() < deadline:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # releases the readers waiting now
            except OSError:
                pass  # none waiting at this instant
            await asyncio.sleep(0.01)
    assert workers.written_off == 0  # they left once their call returned (past the pool's room) or serve again
    assert workers.threads <= 4


async def test_a_thread_whose_caller_was_cancelled_serves_again(monkeypatch):
    """A stream stopped (a reload) while its check ran: the thread is written off, and once the
    call returns it serves again instead of ending (a short-lived thread fragments malloc's arenas)."""
    workers = Workers(max_threads=4)
    monkeypatch.setattr(blocking, "_workers", workers)
    release = threading.Event()
    task = asyncio.ensure_future(in_thread(lambda: release.wait(5), timeout=None, name="test-check"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert workers.written_off == 1 and workers.threads == 0
    release.set()
    deadline = time.monotonic() + 5
    while workers.written_off and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    mine = [t for t in threading.enumerate() if getattr(t, "_target", None) == workers._serve]
    assert workers.written_off == 0 and workers.threads == 1 and len(mine) == 1
    for _ in range(3):
        assert await in_thread(lambda: threading.current_thread(), timeout=5, name="test-next") is mine[0]


async def test_a_key_still_stuck_fails_at_once_and_holds_one_thread(tmp_path):
    """One hung directory checked every 2 s holds one thread, not one more per check."""
    fifo = tmp_path / "hung"
    os.mkfifo(fifo)
    with pytest.raises(TimeoutError):
        await in_thread(lambda: open(fifo).read(), timeout=0.1, name="test-key", key="dir:a")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="an earlier call on dir:a is still stuck"):
        await in_thread(lambda: open(fifo).read(), timeout=5, name="test-key", key="dir:a")
    assert time.monotonic() - started < 1
    assert await in_thread(lambda: 3, timeout=2, name="test-key", key="dir:b") == 3  # other keys go on
    assert len([t for t in threading.enumerate() if t.name == "test-key"]) == 1
    with open(fifo, "w"):
        pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            assert await in_thread(lambda: 4, timeout=2, name="test-key", key="dir:a") == 4
            break
        except TimeoutError:
            await asyncio.sleep(0.01)  # the released call is on its way back
    else:
        pytest.fail("key dir:a never freed after its call returned")


def test_the_most_recently_idle_thread_takes_the_next_call():
    """Each thread keeps glibc's cache of the chunks it freed: calls spread over every thread in
    turn grow every cache; on the last thread to go idle they grow one."""
    workers = Workers(max_threads=8)

    def all_parked() -> None:  # a job's last act comes before its thread is back waiting for work
        deadline = time.monotonic() + 5
        while len(workers._parked) < 8 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert workers.threads == 8 and len(workers._parked) == 8

    gate = threading.Barrier(9)
    for _ in range(8):  # eight at once: eight threads
        workers.submit(lambda: gate.wait(5), "hold")
    gate.wait(5)
    all_parked()
    ran: list[int] = []
    for _ in range(50):  # one at a time, as a quiet agent's checks come
        done = threading.Event()
        workers.submit(lambda: (ran.append(threading.get_ident()), done.set()), "one")  # noqa: B023
        assert done.wait(5)
        all_parked()
    assert len(set(ran)) == 1


def test_a_thread_that_cannot_start_fails_its_call_which_never_runs(monkeypatch):
    """The system refuses a thread (EAGAIN: a process limit, no memory): the caller gets the error,
    the call is not run later behind its back, and no thread is counted that does not exist."""
    workers = Workers(max_threads=4)
    start = threading.Thread.start

    def refused(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refused)
    ran: list[str] = []
    with pytest.raises(RuntimeError):
        workers.submit(lambda: ran.append("refused"), "refused")
    assert (workers.threads, workers._idle, workers._queued) == (0, 0, 0)
    monkeypatch.setattr(threading.Thread, "start", start)
    done = threading.Event()
    workers.submit(lambda: (ran.append("next"), done.set()), "next")
    assert done.wait(5)
    time.sleep(0.1)
    assert ran == ["next"] and workers.threads == 1


def test_a_pool_keeps_the_order_raises_the_first_error_and_reuses_its_threads():
    fan = blocking.pool("test-fan", 3)
    assert fan.map(lambda x: x * 2, range(10)) == [x * 2 for x in range(10)]
    first = {t.name for t in threading.enumerate() if t.name.startswith("test-fan-")}
    with pytest.raises(ZeroDivisionError):
        fan.map(lambda x: 1 / x, [1, 0, 2])
    assert all(t.daemon for t in fan.map(lambda _: threading.current_thread(), [1, 2]))
    assert {t.name for t in threading.enumerate() if t.name.startswith("test-fan-")} == first  # no new threads
    assert len(first) <= 3


#: Stuck on a FIFO nobody writes to (a hung mount's stand-in) in a pool and in asyncio's default
#: executor, then the interpreter exits: it must not wait for them (ThreadPoolExecutor threads are
#: joined at exit, and asyncio.run joins its default executor's with no timeout).
STUCK_AT_EXIT = """
import asyncio, sys, threading
from agent import blocking
fifo = sys.argv[1]
threading.Thread(target=lambda: blocking.pool("exit-test", 1).map(lambda p: open(p).read(), [fifo]),
                 daemon=True).start()
async def main():
    if sys.argv[2] == "executor":
        asyncio.get_running_loop().set_default_executor(blocking.DaemonExecutor())
        asyncio.ensure_future(asyncio.to_thread(lambda: open(fifo).read()))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if len(blocking.stuck()) == (2 if sys.argv[2] == "executor" else 1):
            break
asyncio.run(main())
print(",".join(blocking.stuck()), flush=True)
"""


@pytest.mark.parametrize("where", ["pool", "executor"])
def test_calls_stuck_at_exit_do_not_hold_up_the_exit_and_are_named(tmp_path, where):
    import subprocess
    import sys
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = subprocess.run([sys.executable, "-c", STUCK_AT_EXIT, str(fifo), where], capture_output=True, text=True,
                         timeout=20, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    names = out.stdout.strip().split(",")
    assert "exit-test-1" in names
    if where == "executor":
        assert any(n.startswith("executor:") for n in names), names


async def test_a_call_past_its_patience_stops_counting_and_still_answers(monkeypatch):
    """A look at a hung mount (a folder's probe) holds no counted thread for its whole timeout."""
    workers = Workers(max_threads=4)
    monkeypatch.setattr(blocking, "_workers", workers)
    release, slow = threading.Event(), []
    task = asyncio.ensure_future(in_thread(lambda: release.wait(5) and "answer", timeout=5, name="test-slow",
                                           patience=0.1, on_slow=lambda: slow.append(workers.threads)))
    deadline = time.monotonic() + 5
    while not slow and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert slow == [0] and workers.written_off == 1 and not task.done()
    release.set()
    assert await task == "answer"
    assert await in_thread(lambda: 1, timeout=5, name="test-quick", patience=0.1, on_slow=lambda: slow.append(-1)) == 1
    await asyncio.sleep(0.3)
    assert slow == [0] and workers.written_off == 0 and workers.threads == 1  # the slow one serves again


async def test_a_call_leaves_no_reference_cycle_behind():
    """Every check of a recording folder is a call (60 a second with 20 streams).  Each used to
    leave a cycle (its patience timer named itself in its own closure) holding its Future and
    closures until the cyclic collector found it: ~25 objects a call, and at 500 streams full
    collections of tens of thousands of objects pausing the loop.  Answered, slow past its
    patience, or raising, a call is now freed by reference counting alone (a raising one kept its
    exception in frames its traceback held: ~40 objects a call, found by a hostile review)."""
    import gc

    def boom() -> None:
        raise FileNotFoundError("gone")

    calls = [lambda: in_thread(lambda: 1, timeout=10, name="t-plain", key="t-key"),
             lambda: in_thread(lambda: 1, timeout=10, name="t-patient", patience=5),
             lambda: in_thread(lambda: time.sleep(0.05), timeout=10, name="t-slow", patience=0.01,
                               on_slow=lambda: None),
             lambda: in_thread(boom, timeout=10, name="t-raises", patience=5),
             lambda: in_thread(boom, timeout=10, name="t-raises-again"),
             lambda: in_thread(lambda: 1, timeout=10, name="t-after")]  # the worker lets go of the last one
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept in gc.garbage instead of freed
    try:
        for call in calls:
            with contextlib.suppress(FileNotFoundError):
                await call()
        await asyncio.sleep(0.1)  # the slow call's thread has handed back its answer
        gc.collect()
        # Only what these calls made: another test's leftovers (a service's finished Task, say)
        # can turn unreachable while this one awaits, and are not this module's doing.
        ours = [o for o in gc.garbage if getattr(o, "__qualname__", "").startswith("_call.<locals>")
                or (isinstance(o, FileNotFoundError) and o.args == ("gone",))
                or getattr(getattr(o, "f_code", None), "co_filename", "") == blocking.__file__]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert ours == []


def test_calls_due_together_queue_behind_the_thread_already_woken(monkeypatch):
    """20 streams started together check their folders every 2 s in step: 20 calls in one tick of
    the loop.  A thread woken per call spread them over 20 threads every 2 s (a 20-stream soak woke
    each of its 20 workers ~200 times a minute), and every thread's malloc cache grew.  Calls
    submitted while a thread is on its way to the queue now wait for it (bench/worker_wakes.py)."""
    workers = Workers(max_threads=32)
    hold, started = threading.Event(), threading.Semaphore(0)

    def warm() -> None:
        started.release()
        hold.wait(5)
    for _ in range(3):  # three at once that last: the lookout gives each a thread
        workers.submit(warm, "warm")  # the same job three times, as a bound method might be
    for _ in range(3):
        assert started.acquire(timeout=5)
    hold.set()
    _until(lambda: len(workers._parked) >= 3)
    assert workers.threads == len(workers._parked) == 3
    monkeypatch.setattr(blocking, "LOOKOUT", 30.0)  # about the wake rule: the lookout must not act meanwhile
    release = _on_its_way(workers)  # one thread on its way back (its delivery held open)
    threads, parked = workers.threads, len(workers._parked)
    ran: list[int] = []
    done = threading.Semaphore(0)
    for _ in range(20):  # one round of checks, due together
        workers.submit(lambda: (ran.append(threading.get_ident()), done.release()), "check")  # type: ignore[func-returns-value]  # noqa: E501
    assert (workers.threads, len(workers._parked)) == (threads, parked)  # none started, none woken
    release.set()
    for _ in range(20):
        assert done.acquire(timeout=5)
    assert len(set(ran)) == 1  # the thread that was on its way ran them all


def test_calls_queued_behind_a_thread_that_got_stuck_get_threads_of_their_own():
    """The thread on its way took a call that hangs (a hung mount): the calls queued behind it are
    given threads by the lookout, and once nothing waits the lookout sleeps."""
    workers = Workers(max_threads=8)
    release = threading.Event()
    done: list[int] = []
    finished = threading.Semaphore(0)
    workers.submit(release.wait, "stuck")
    for i in range(10):  # queued behind it, while it is on its way
        workers.submit(lambda i=i: (done.append(i), finished.release()), "quick")  # type: ignore[misc]
    try:
        for _ in range(10):
            assert finished.acquire(timeout=5), f"only {sorted(done)} ran: queued behind a stuck thread"
        assert sorted(done) == list(range(10)) and not release.is_set()
        assert 2 <= workers.threads <= 8
        lookout = workers._lookout
        assert lookout is not None and lookout.daemon
        time.sleep(0.1)  # nothing waits now
        status = f"/proc/self/task/{lookout.native_id}/status"

        def switches() -> int:
            with open(status) as f:
                return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
        before = switches()
        time.sleep(0.5)
        assert switches() == before  # asleep, not polling
    finally:
        release.set()


def test_the_lookout_starts_no_thread_for_a_call_a_thread_is_on_its_way_to():
    """Two threads stuck and one on its way back, two calls queued: the one on its way takes the
    first, so the lookout adds one thread, not two.  It added one per waiting call: on a loaded
    CI box, where a woken thread may take longer than LOOKOUT to run, a hung-mount test counted
    10 threads against its 8 probes' 9."""
    workers = Workers(max_threads=32)
    stuck, started = threading.Event(), threading.Semaphore(0)

    def hang() -> None:
        started.release()
        stuck.wait(5)
    try:
        for _ in range(2):  # each starts its own thread: none is idle when it is submitted
            workers.submit(hang, "stuck")
            assert started.acquire(timeout=5)
        release = _on_its_way(workers)  # a third thread, on its way back (its delivery held open)
        assert (workers.threads, workers._idle, len(workers._parked)) == (3, 1, 0)
        done = threading.Semaphore(0)
        for _ in range(2):
            workers.submit(done.release, "quick")
        for _ in range(2):
            assert done.acquire(timeout=5)  # both ran on the one thread the lookout added
        time.sleep(5 * blocking.LOOKOUT)  # a few more looks
        assert workers.threads == 4
        release.set()
    finally:
        stuck.set()


def test_a_write_off_starts_no_thread_for_a_call_a_thread_is_on_its_way_to():
    """A stuck call written off while the one call queued has a thread on its way to it: that
    thread takes it, no other is woken or started (one was, for every write-off with calls queued)."""
    workers = Workers(max_threads=32)
    stuck, started = threading.Event(), threading.Event()

    def hang() -> None:
        started.set()
        stuck.wait(5)
    try:
        workers.submit(hang, "stuck")
        assert started.wait(5)
        release = _on_its_way(workers)
        done = threading.Event()
        workers.submit(done.set, "quick")  # queued behind the thread on its way
        assert workers.write_off(hang)
        time.sleep(5 * blocking.LOOKOUT)  # the lookout looks too
        assert (workers.threads, workers.written_off) == (1, 1)
        release.set()
        assert done.wait(5)
    finally:
        stuck.set()


async def test_slow_calls_due_together_soon_get_threads_enough(monkeypatch):
    """Calls of a few ms each (a slow but healthy NFS) due together are not run one after another
    on one thread (200 checks of 8 ms took 1.65 s so, found by a review: a call shorter than LOOKOUT
    looked like progress): while calls queued at the lookout's last look still wait, it doubles
    the threads."""
    workers = Workers(max_threads=32)
    monkeypatch.setattr(blocking, "_workers", workers)
    used = await asyncio.gather(*(in_thread(lambda: time.sleep(0.005) or threading.get_ident(), timeout=10,
                                            name="test-slow-check", key=f"dir:{i}") for i in range(40)))
    assert len(set(used)) >= 4, f"40 calls of 5 ms on {len(set(used))} threads"


def _on_its_way(workers: Workers) -> threading.Event:
    """A thread done with a call and on its way back to the queue (its delivery held open); the
    gate returned lets it go on."""
    gate, up = threading.Event(), threading.Event()

    def previous() -> Callable[[], object]:
        up.set()
        return lambda: gate.wait(5)  # its delivery: run once the thread counts idle again
    workers.submit(previous, "previous")
    assert up.wait(5)
    _until(lambda: workers._idle - len(workers._parked) == 1)
    return gate


@pytest.mark.parametrize("refused", ["vas-workers-lookout", "vas-worker-2"])
def test_a_thread_the_system_refuses_once_leaves_no_call_behind_a_hung_one(tmp_path, monkeypatch, refused):
    """EAGAIN (a pids cgroup at its limit for a moment) for the lookout, or for the thread it starts:
    the call queued behind a hung one still gets a thread (found by a review: it waited for the hung call)."""
    fifo = tmp_path / "hung"
    os.mkfifo(fifo)
    workers = Workers(max_threads=8)
    gate = _on_its_way(workers)
    start, refusals = threading.Thread.start, []

    def once(thread: threading.Thread) -> None:
        if thread.name == refused and not refusals:
            refusals.append(thread.name)
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", once)
    ran = threading.Event()
    try:
        workers.submit(lambda: open(fifo).read(), "hung")  # the thread on its way takes it, and hangs
        workers.submit(ran.set, "quick")  # queued behind it
        gate.set()
        assert ran.wait(5), f"queued behind a hung call: threads={workers.threads} queued={workers._queued}"
        assert refusals == [refused]
    finally:
        gate.set()
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_an_interrupt_while_starting_a_thread_is_not_swallowed(monkeypatch):
    """Only the system's refusal (RuntimeError) is caught where a thread is started for queued calls."""
    workers = Workers(max_threads=1)
    release, running = threading.Event(), threading.Event()

    def job() -> None:
        running.set()
        release.wait(5)
    workers.submit(job, "stuck")
    assert running.wait(5)
    workers.submit(lambda: None, "queued")  # behind it: no room until write_off makes some

    def interrupted(thread: threading.Thread) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            workers.write_off(job)  # starts a thread for the queued call: interrupted
    finally:
        release.set()


def _until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)
    return cond()


def test_a_thread_start_failing_for_want_of_memory_loses_no_wake_up():
    """A start failing with MemoryError (not EAGAIN's RuntimeError), after the lookout had taken a
    parked thread's wake-up, killed the lookout and left that thread counted on its way to the queue
    forever: every later call queued behind it and never ran (found by a review)."""
    workers = Workers(max_threads=8)
    hung = [threading.Event() for _ in range(4)]
    running = [threading.Event() for _ in range(4)]
    gate = threading.Event()

    def job(i: int) -> Callable[[], object] | None:
        running[i].set()
        hung[i].wait(10)
        return (lambda: gate.wait(10)) if i == 2 else None
    try:
        for i in range(4):
            workers.submit(partial(job, i), "hung")
            assert running[i].wait(5)
        hung[3].set()
        assert _until(lambda: len(workers._parked) == 1)  # one parked
        hung[2].set()
        assert _until(lambda: workers._idle == 2 and len(workers._running) == 2)  # one on its way, held

        def no_memory() -> None:
            raise MemoryError("thread start")
        workers._start = no_memory  # type: ignore[method-assign]
        got: list[str] = []
        workers.submit(lambda: got.append("x"), "x")
        workers.submit(lambda: got.append("y"), "y")  # the lookout is armed: it wakes the parked one, then fails
        time.sleep(0.1)
        del workers._start
        gate.set()
        assert _until(lambda: got == ["x", "y"])
        workers.submit(lambda: got.append("z"), "z")
        assert _until(lambda: "z" in got), "a later call never ran: a thread's wake-up was lost"
        assert workers._lookout is not None and workers._lookout.is_alive()
    finally:
        gate.set()
        for event in hung:
            event.set()


def test_a_lookout_that_cannot_start_for_want_of_memory_is_tried_again(monkeypatch):
    """Its start failing with MemoryError left the pool believing it had a lookout: calls behind a
    hung one waited for it for the life of the process (found by a review)."""
    real = threading.Thread
    fail = [True]

    class NoLookout(real):  # type: ignore[valid-type,misc]
        def start(self) -> None:
            if self.name == "vas-workers-lookout" and fail[0]:
                raise MemoryError("thread start")
            super().start()
    monkeypatch.setattr(blocking.threading, "Thread", NoLookout)
    workers = Workers(max_threads=8)
    release = threading.Event()
    done: list[int] = []
    try:
        workers.submit(lambda: release.wait(10), "stuck")  # the thread started takes it, and hangs
        workers.submit(lambda: done.append(1), "q1")  # queued behind it: the lookout's start fails
        fail[0] = False
        assert _until(lambda: 1 in done)
        workers.submit(lambda: release.wait(10), "stuck2")
        workers.submit(lambda: done.append(2), "q2")
        workers.submit(lambda: done.append(3), "q3")
        assert _until(lambda: 2 in done and 3 in done), "calls behind a hung one: no lookout any more"
    finally:
        release.set()


async def test_a_call_no_thread_could_start_for_leaves_its_key_free(monkeypatch):
    """submit raising (can't start new thread) left the call's key taken: every later check of that
    folder failed "an earlier call is still stuck" for the life of the process (found by a review)."""
    workers = Workers()
    monkeypatch.setattr(blocking, "_workers", workers)

    def eagain() -> None:
        raise RuntimeError("can't start new thread")
    workers._start = eagain  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await in_thread(lambda: 1, timeout=5, name="test-check", key="dir:eagain")
    del workers._start
    assert await in_thread(lambda: 2, timeout=5, name="test-check", key="dir:eagain") == 2
