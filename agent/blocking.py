"""Blocking calls that may hang (a FIFO, a hung NFS mount) kept off the event loop.

``asyncio.to_thread`` uses the default executor, whose threads are joined when
the loop shuts down: one read stuck on a hung mount would then hold up the
agent's exit forever.  Here each call gets its own daemon thread, and the
caller stops waiting after ``timeout`` (the thread is abandoned, not joined).
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def in_thread(fn: Callable[[], T], *, timeout: float, name: str) -> T:
    """``fn()`` in a daemon thread; ``TimeoutError`` after ``timeout`` seconds.

    Cancelling the caller (e.g. the agent stopping) stops the wait at once.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, exc: BaseException | None) -> None:
        if done.done():  # the caller gave up (timeout, cancelled)
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, exc = fn(), None
        except BaseException as error:  # handed to the caller, raised there
            result, exc = None, error
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    threading.Thread(target=work, name=name, daemon=True).start()
    return await asyncio.wait_for(done, timeout)
