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
"""
from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

#: Threads at most: enough for every stream's periodic checks to pass a few stuck ones.
MAX_THREADS = 32
#: Calls waiting for a thread at most, when all are busy (stuck on a hung mount).
MAX_QUEUED = 1024

_Job = Callable[[], None]


class Workers:
    """Long-lived daemon threads running jobs from one queue, started as calls need them."""

    def __init__(self, max_threads: int = MAX_THREADS, max_queued: int = MAX_QUEUED) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._max_threads, self._max_queued = max_threads, max_queued
        self.threads = 0
        self._idle = 0
        self._queued = 0

    def submit(self, job: _Job, name: str) -> None:
        """Run ``job()`` on a worker; ``TimeoutError`` when every worker is stuck and the queue is full."""
        with self._lock:
            if self._idle <= self._queued and self.threads < self._max_threads:
                self.threads += 1
                threading.Thread(target=self._serve, name=f"vas-worker-{self.threads}", daemon=True).start()
            elif self._idle <= self._queued and self._queued >= self._max_queued:
                raise TimeoutError(f"{name}: all {self.threads} worker threads are stuck (a hung file system?)")
            self._queued += 1
        self._jobs.put(job)

    def _serve(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            job = self._jobs.get()
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            job()


_workers = Workers()
_pools: dict[str, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def pool(name: str, size: int) -> ThreadPoolExecutor:
    """The process-lifetime pool ``name`` of ``size`` threads, for work fanned out over several
    threads (a first index, a deletion pass): made once, not per pass (see the module's docstring)."""
    with _pools_lock:
        if name not in _pools:
            _pools[name] = ThreadPoolExecutor(size, thread_name_prefix=name)
        return _pools[name]


async def in_thread(fn: Callable[[], T], *, timeout: float, name: str) -> T:
    """``fn()`` on a long-lived daemon thread; ``TimeoutError`` after ``timeout`` seconds.

    Cancelling the caller (e.g. the agent stopping) stops the wait at once; a call whose
    caller stopped waiting before a thread took it up is not run.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if done.done():  # the caller gave up (timeout, cancelled)
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(result)

    def work() -> None:
        if done.done():  # given up while queued: nobody wants the answer (read without the loop: a hint)
            return
        me = threading.current_thread()
        idle_name, me.name = me.name, name  # a stuck thread says what it was doing (py-spy, /proc/PID/task)
        try:
            result, exc = fn(), None
        except BaseException as error:  # handed to the caller, raised there
            result, exc = None, error
        finally:
            me.name = idle_name
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    _workers.submit(work, name)
    return await asyncio.wait_for(done, timeout)
