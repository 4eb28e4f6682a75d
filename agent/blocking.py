"""Blocking calls that may hang (a FIFO, a hung NFS mount) kept off the event loop.

``asyncio.to_thread`` uses the default executor, whose threads are joined when
the loop shuts down: one read stuck on a hung mount would then hold up the
agent's exit forever.  Here calls run on long-lived daemon threads, and the
caller stops waiting after ``timeout`` (a stuck thread is abandoned, not joined).

The threads live as long as the process.  A thread per call (what this module did
before) made glibc hand out and fragment malloc arenas with every short-lived
thread: the agent's RSS grew by about 14 MiB/h under 50 recording streams, each
checking its directory every 2 s.  A call finds an idle thread, or a new one is
started for it while fewer than ``MAX_THREADS`` exist, so one call stuck on a hung
mount never holds up the others; when all of them are stuck the call waits in a
queue of at most ``MAX_QUEUED``, and past that it fails at once.

A thread whose caller gave up on it (timeout, cancel) is written off: it no longer
counts against ``MAX_THREADS``, so calls stuck on one hung mount cannot take every
thread and starve the rest of the agent (a reload, another disk's streams).  When its
call returns it serves again, unless successors filled the pool: only then does it
leave (a stream stopped mid-call, a reload, must not cost a thread's start and end).
The most recently idle thread takes the next call, so a quiet agent's calls run on one or
two threads and the others stay parked.  Each thread keeps glibc's cache of the chunks it
freed (up to 7 per size up to 1 KiB, reusable by that thread only): calls spread over every
thread in turn fill every thread's cache, slowly (in a 20-stream soak: 2.9 MiB in 44 threads'
caches at minute 80, still growing ~1 MiB/h, `bench/heap_census.py`).  Calls due together
(every stream's check, in step since the streams started together) wake no thread each: they
queue behind the thread already woken, and a lookout wakes more only for calls still queued
``LOOKOUT`` later (the threads ahead are slow or stuck).
A call with a ``key`` (a directory watched every 2 s) fails at once while the previous
call with that key is still stuck, so one hung mount holds a thread per key, not a new
one per check.

Nothing here is joined at exit: :func:`pool`'s threads and asyncio's default
executor (:class:`DaemonExecutor`, installed by ``vas-agent``) are daemon threads
too (``concurrent.futures.ThreadPoolExecutor`` joins its threads at interpreter
exit, and ``asyncio.run`` joins the default executor's with no timeout: one call
stuck on a hung mount kept the agent from exiting).  :func:`stuck` names the calls
still running, for the agent's last log line.
"""
from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")

#: Threads at most: enough for every stream's periodic checks to pass a few stuck ones.
MAX_THREADS = 32
#: Calls waiting for a thread at most, when all are busy (stuck on a hung mount).
MAX_QUEUED = 1024
#: Written-off threads (still stuck in a call nobody waits for) at most; past it, stuck ones count again.
MAX_WRITTEN_OFF = 256
#: Seconds a queued call may wait (the threads ahead are slow or stuck) before more threads are woken.
LOOKOUT = 0.01

#: A job may return what delivers its answer: run once its thread counts as idle again, so a caller
#: that submits its next call on the answer finds that thread free instead of starting one.
_Job = Callable[[], object]


class Workers:
    """Long-lived daemon threads running jobs from one queue, started as calls need them; the
    most recently idle thread takes the next job (the others stay parked).

    A call wakes (or starts) a thread only when no thread is on its way to the queue; while one
    is, the call waits for it.  The lookout (one more thread, asleep while the queue is empty)
    looks every ``LOOKOUT`` seconds while calls are queued: calls queued at its last look and
    still waiting (the threads ahead are slow or stuck: a hung mount) get as many more threads
    as are busy, so the threads double each look until the queue moves.

    Checks that fall due together (20 streams' every 2 s, started together and so in step) come
    in one tick of the loop: a thread woken per call spread them over 20 threads, every 2 s, and
    every thread's malloc cache grew; now quick ones run one after another on one."""

    def __init__(self, max_threads: int = MAX_THREADS, max_queued: int = MAX_QUEUED) -> None:
        self._jobs: collections.deque[_Job] = collections.deque()  # under the lock
        self._parked: list[threading.Lock] = []  # idle threads' wake-ups, the most recent last
        self._lock = threading.Lock()
        self._max_threads, self._max_queued = max_threads, max_queued
        self.threads = 0  # counted against max_threads: not written off
        self.written_off = 0  # stuck in a call whose caller gave up; they leave when it returns
        self._idle = 0  # threads not in a call: parked, or on their way to the queue
        self._queued = 0
        self._running: dict[_Job, threading.Thread] = {}
        self._gone: set[threading.Thread] = set()
        self._lookout: threading.Thread | None = None
        self._look = threading.Condition(self._lock)  # the lookout sleeps on it while nothing waits
        self._look_due = False  # calls are queued: the lookout checks that they are being taken
        self._taken = 0  # calls taken off the queue so far
        self._look_taken = self._look_queued = 0  # ... and calls queued, when the lookout last looked

    def submit(self, job: _Job, name: str) -> None:
        """Run ``job()`` on a worker; ``TimeoutError`` when every worker is stuck and the queue is full."""
        with self._lock:
            if self._idle <= self._queued and self._queued >= self._max_queued and not self._room():
                raise TimeoutError(f"{name}: all {self.threads} worker threads are stuck (a hung file system?)")
            wake = None
            awake = self._on_their_way()  # they take it
            if not awake:
                if self._parked:
                    wake = self._parked.pop()
                elif self._room():
                    self._start()  # EAGAIN raised here: the call fails and is never run
            self._queued += 1
            self._jobs.append(job)
            if awake and self._queued > awake:  # more calls than threads on their way: the lookout watches
                self._watch_queue()
        if wake is not None:
            wake.release()

    def write_off(self, job: _Job) -> bool:
        """The caller of ``job`` gave up (or finds it slow): if a thread is stuck in it, another may
        take its place.  True when a thread running ``job`` is written off (now or before)."""
        wakes: list[threading.Lock] = []
        with self._lock:
            thread = self._running.get(job)
            if thread is None or thread in self._gone or self.written_off >= MAX_WRITTEN_OFF:
                return thread is not None and thread in self._gone
            self._gone.add(thread)
            self.threads -= 1
            self.written_off += 1
            if self._jobs:  # calls queued behind it get a thread now, and more if they still wait
                if len(self._jobs) > self._on_their_way():  # more than those threads take
                    self._one_more(wakes)
                self._watch_queue()
        for wake in wakes:
            wake.release()
        return True

    def _on_their_way(self) -> int:
        """Threads on their way to the queue: idle but not parked (woken, started, or back from a
        call); each takes the next queued call (under the lock)."""
        return self._idle - len(self._parked)

    def _room(self) -> bool:
        return self.threads < self._max_threads

    def _start(self) -> None:
        """Start a thread, counted idle from now: it is on its way to the queue (under the lock)."""
        self.threads += 1
        self._idle += 1
        try:
            threading.Thread(target=self._serve, name=f"vas-worker-{self.threads}", daemon=True).start()
        except BaseException:  # not started: count no thread that does not exist
            self.threads -= 1
            self._idle -= 1
            raise

    def _one_more(self, wakes: list[threading.Lock]) -> bool:
        """One more thread for the queue: a parked one (its wake-up added to ``wakes``, for the caller
        to release) or a new one while there is room; False when neither (under the lock)."""
        if self._parked:
            wakes.append(self._parked.pop())
            return True
        if not self._room():
            return False
        try:
            self._start()
        except Exception:  # can't start new thread (EAGAIN; MemoryError): the lookout tries again
            return False
        return True

    def _watch_queue(self) -> None:
        """Have the lookout check, every ``LOOKOUT``, that the queued calls are being taken (under the lock)."""
        if self._look_due:
            return
        self._look_due, self._look_taken, self._look_queued = True, self._taken, self._queued
        if self._lookout is not None:
            self._look.notify()
            return
        try:
            self._lookout = threading.Thread(target=self._keep_lookout, name="vas-workers-lookout", daemon=True)
            self._lookout.start()
        except Exception:  # no lookout (EAGAIN; MemoryError): one more thread now, as it would have woken
            self._lookout, self._look_due = None, False
            wakes: list[threading.Lock] = []
            self._one_more(wakes)
            for wake in wakes:
                wake.release()

    def _keep_lookout(self) -> None:
        """While calls are queued: when some queued at the last look are still waiting (the threads
        ahead are slow or stuck), as many more threads as are busy (at least one, at most one per
        such call that no thread is on its way to: on a loaded machine a woken thread may take
        longer than LOOKOUT to run): quick calls stay on the thread already woken, slow ones soon
        get threads enough.  Asleep while the queue is empty."""
        with self._lock:
            while True:
                while not self._look_due:
                    self._look.wait()
                deadline = time.monotonic() + LOOKOUT
                while (left := deadline - time.monotonic()) > 0:
                    self._look.wait(left)
                waited = self._look_queued - (self._taken - self._look_taken)  # FIFO: the oldest are taken first
                coming = self._on_their_way()  # each takes one of those
                wakes: list[threading.Lock] = []
                for _ in range(min(waited - coming, max(1, self.threads - self._idle))):
                    if not self._one_more(wakes):
                        break
                for wake in wakes:
                    wake.release()
                self._look_taken, self._look_queued = self._taken, self._queued
                # every thread busy and none to start: one that returns takes the next call (write_off re-arms)
                self._look_due = bool(self._jobs) and (bool(self._parked) or self._room())

    def _serve(self) -> None:
        me = threading.current_thread()
        wake = threading.Lock()
        wake.acquire()  # held while running: the next acquire parks this thread until a submit
        while True:
            with self._lock:
                job = self._jobs.popleft() if self._jobs else None
                if job is None:
                    self._parked.append(wake)
                else:
                    self._idle -= 1
                    self._queued -= 1
                    self._taken += 1
                    self._running[job] = me
            if job is None:
                wake.acquire()  # released by the submit that took this thread off the stack
                continue
            deliver = job()  # in_thread's jobs never raise
            with self._lock:
                self._running.pop(job, None)  # (the same job object submitted twice: never the thread's end)
                gone = me in self._gone  # written off while stuck (or its caller was cancelled)
                if gone:
                    self._gone.discard(me)
                    self.written_off -= 1
                    gone = not self._room()  # a successor filled the pool: leave; else serve again
                    if not gone:
                        self.threads += 1
                if not gone:
                    self._idle += 1
            if callable(deliver):
                deliver()
            if gone:
                return


class Fanout:
    """Up to ``size`` long-lived daemon threads named ``{name}-N`` for work fanned out over several
    threads (a first index, a deletion pass); ``map`` as ``Executor.map`` but eager and a list."""

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self.busy: set[threading.Thread] = set()

    def map(self, fn: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
        """``[fn(item) ...]`` run on the pool's threads; the first error is raised (after all ran)."""
        futures: list[Future[T]] = []
        for item in items:
            future: Future[T] = Future()
            self._jobs.put(partial(self._run, future, fn, item))
            futures.append(future)
            with self._lock:
                if self._threads < min(self.size, len(futures)):
                    self._threads += 1
                    threading.Thread(target=self._serve, name=f"{self.name}-{self._threads}", daemon=True).start()
        return [f.result() for f in futures]

    def _run(self, future: Future[T], fn: Callable[[Any], T], item: Any) -> None:
        try:
            future.set_result(fn(item))
        except BaseException as exc:  # raised in map's caller
            future.set_exception(exc)

    def _serve(self) -> None:
        me = threading.current_thread()
        while True:
            job = self._jobs.get()
            with self._lock:
                self.busy.add(me)
            job()
            with self._lock:
                self.busy.discard(me)


class DaemonExecutor(ThreadPoolExecutor):
    """asyncio's default executor on :class:`Workers`' daemon threads: ``shutdown`` joins nothing,
    so a call stuck on a hung mount (``asyncio.to_thread``, a DNS lookup) cannot hold up the exit.
    A ThreadPoolExecutor only for ``loop.set_default_executor`` (3.11 asks for one): it starts none
    of its own threads."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` on a worker thread (named for ``fn`` while it runs)."""
        future: Future[T] = Future()
        name = f"executor:{getattr(fn, '__qualname__', 'call')}"

        def job() -> None:
            if not future.set_running_or_notify_cancel():
                return
            me = threading.current_thread()
            idle_name, me.name = me.name, name
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)
            finally:
                me.name = idle_name
        _workers.submit(job, name)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to join: the threads are daemons, shared with :func:`in_thread`."""


_workers = Workers()
_pools: dict[str, Fanout] = {}
_pools_lock = threading.Lock()


def pool(name: str, size: int) -> Fanout:
    """The process-lifetime pool ``name`` of ``size`` threads, for work fanned out over several
    threads (a first index, a deletion pass): made once, not per pass (see the module's docstring)."""
    with _pools_lock:
        if name not in _pools:
            _pools[name] = Fanout(name, size)
        return _pools[name]


def stuck() -> list[str]:
    """The names of the threads still inside a call (at exit: what is stuck, e.g. on a hung mount)."""
    with _workers._lock:
        names = [t.name for t in _workers._running.values()]
    with _pools_lock:
        fanouts = list(_pools.values())
    for fan in fanouts:
        with fan._lock:
            names += [t.name for t in fan.busy]
    return sorted(names)


_keys: set[str] = set()  # keys of calls submitted and not yet returned
_keys_lock = threading.Lock()


async def in_thread(fn: Callable[[], T], *, timeout: float | None, name: str, key: str | None = None,
                    patience: float | None = None, on_slow: Callable[[], None] | None = None) -> T:
    """``fn()`` on a long-lived daemon thread; ``TimeoutError`` after ``timeout`` seconds (None:
    no limit; the caller still stops waiting when cancelled, and the thread is never joined).

    Cancelling the caller (e.g. the agent stopping) stops the wait at once; a call whose
    caller stopped waiting before a thread took it up is not run.  While an earlier call
    with the same ``key`` has not returned (stuck), ``TimeoutError`` at once.  A call a thread
    is still running ``patience`` seconds after it was submitted (or at a later multiple, while
    it waited in the queue) is written off while its caller keeps waiting (a look at a hung
    mount holds no counted thread for its whole ``timeout``); then ``on_slow()`` runs.
    """
    if key is not None:
        with _keys_lock:
            if key in _keys:
                raise TimeoutError(f"{name}: an earlier call on {key} is still stuck (a hung file system?)")
            _keys.add(key)
    return await _call(fn, timeout, name, key, (patience, on_slow))


def _release(key: str | None) -> None:
    if key is not None:
        with _keys_lock:
            _keys.discard(key)


async def _call(fn: Callable[[], T], timeout: float | None, name: str, key: str | None,
                slow: tuple[float | None, Callable[[], None] | None]) -> T:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[list[Any]] = loop.create_future()  # [result, exception]
    patience, on_slow = slow
    timer: asyncio.TimerHandle | None = None

    def slow_now(again: Callable[..., None]) -> None:  # on the loop, every ``patience`` s until it returns
        nonlocal timer  # ``again`` is slow_now: naming itself would put it in its own closure (a cycle per call)
        if done.done():
            return
        if _workers.write_off(work):
            if on_slow is not None:
                on_slow()
        elif work not in _workers._running and patience is not None:  # still queued: look again later
            timer = loop.call_later(patience, again, again)

    def settle(outcome: list[Any]) -> None:
        if not done.done():  # else the caller gave up (timeout, cancelled)
            done.set_result(outcome)

    def work() -> Callable[[], None] | None:
        try:
            return run()
        finally:
            _release(key)  # returned: the next call with this key may go

    def run() -> Callable[[], None] | None:
        if done.done():  # given up while queued: nobody wants the answer (read without the loop: a hint)
            return None
        me = threading.current_thread()
        idle_name, me.name = me.name, name  # a stuck thread says what it was doing (py-spy, /proc/PID/task)
        try:
            outcome: list[Any] = [fn(), None]
        except BaseException as error:  # handed to the caller, raised there
            outcome = [None, error]
        finally:
            me.name = idle_name
        try:
            return _delivery(loop, settle, outcome)
        finally:
            del outcome  # the exception's traceback holds this frame: it must not hold the exception

    try:
        _workers.submit(work, name)
    except BaseException:  # TimeoutError, or no thread could start (RuntimeError): never queued, never run
        _release(key)
        raise
    if patience is not None:  # a timer on the loop: no wakeup of the loop from the thread per call
        timer = loop.call_later(patience, slow_now, slow_now)
    try:
        outcome = await asyncio.wait_for(done, timeout)
    except BaseException:
        _workers.write_off(work)  # stuck in it (or never started): it no longer counts
        raise
    finally:
        # cancel() also empties a handle that already ran: slow_now's closure holds ``timer``, so a
        # handle left holding slow_now would be a cycle that only the cyclic collector could free
        if timer is not None:
            timer.cancel()
    result: T = outcome[0]
    exc: BaseException | None = outcome[1]
    outcome.clear()  # ``done`` keeps the list, and this frame ``done``: neither may keep the exception
    if exc is None:
        return result
    try:
        raise exc
    finally:
        del exc  # the traceback holds this frame (the concurrent.futures way)


def _delivery(loop: asyncio.AbstractEventLoop, settle: Callable[[list[Any]], None],
              outcome: list[Any]) -> Callable[[], None]:
    """What a worker runs once the call's work is done: hand ``outcome`` (``[result, exception]``)
    to the loop.  Made here, not in the worker's frame, which the exception's traceback holds."""
    def deliver() -> None:
        try:
            loop.call_soon_threadsafe(settle, outcome)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more
    return deliver
