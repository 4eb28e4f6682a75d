"""Client connections kept below the descriptor limit, so that a load balancer's check always
finds a descriptor.

At the limit ``accept()`` fails: uvloop (libuv) then accepts and closes every waiting
connection, the load balancer's check too, and logs nothing; asyncio's loop logs a traceback
for every try.  Past ``limit`` open client connections the oldest one that is not being
answered (idle, or still sending its request) is closed instead, and a warning says so, once
a minute at most.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("vas.exporter")

#: Descriptors never given to client connections: segment files, the agent's socket, FFmpeg's
#: pipes, inotify (64), and the connections asyncio's loop accepts in one go, before any is seen
#: here (aiohttp's listen backlog, 128).
HEADROOM = 64 + 128
#: Seconds between two warnings.
WARN_EVERY = 60.0


class _Every:
    """True at most once per ``seconds`` (the first call included): a warning's rate."""

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self._seconds, self._clock, self._last = seconds, clock, float("-inf")

    def __call__(self) -> bool:
        now = self._clock()
        if now - self._last < self._seconds:
            return False
        self._last = now
        return True


def limit_for(soft_nofile: int) -> int:
    """The most client connections kept under a soft descriptor limit of ``soft_nofile``."""
    return max(16, soft_nofile - HEADROOM)


class ConnectionCap:
    """Counts ``server``'s connections in the order they came; past ``limit``, closes the oldest
    that is not being answered (the new one when every other is)."""

    def __init__(self, server: web.Server, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.closed, self._warn_now = limit, 0, _Every(WARN_EVERY, clock)
        self._open: OrderedDict[Any, None] = OrderedDict()
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: Any) -> None:
            made(handler, transport)
            self._open[handler] = None
            for _ in range(len(self._open)):  # each connection looked at once at most
                if len(self._open) <= self.limit:
                    break
                oldest = next(iter(self._open))
                if oldest is not handler and _answering(oldest):
                    self._open.move_to_end(oldest)  # a download is never cut for a newcomer
                    continue
                del self._open[oldest]
                oldest.force_close()  # idle, or dribbling its request: nothing is cut short
                self.closed += 1
                self._warn()

        def connection_lost(handler: Any, exc: BaseException | None) -> None:
            lost(handler, exc)
            self._open.pop(handler, None)

        server.connection_made, server.connection_lost = connection_made, connection_lost  # type: ignore[method-assign,assignment]

    def __len__(self) -> int:
        return len(self._open)

    def _warn(self) -> None:
        if self._warn_now():
            log.warning("%d client connections, the most kept under the descriptor limit: closing the oldest idle "
                        "(%d so far); find the client with `ss -tn state established sport = :<port>`, or raise "
                        "LimitNOFILE=", self.limit, self.closed)


def quiet_accept_errors(loop: Any, clock: Callable[[], float] = time.monotonic) -> None:
    """asyncio's loop, out of descriptors, logs "socket.accept() out of system resource" with a
    traceback at every try (a burst of clients can outrun the cap): one warning a minute instead.
    Everything else goes to the loop's default handler, as before."""
    warn_now = _Every(WARN_EVERY, clock)

    def handler(loop: Any, context: dict[str, Any]) -> None:
        if not context.get("message", "").startswith("socket.accept() out of system resource"):
            loop.default_exception_handler(context)
        elif warn_now():
            log.warning("out of descriptors: new connections wait (%s); see the warnings about client connections",
                        context.get("exception"))
    loop.set_exception_handler(handler)


def _answering(handler: Any) -> bool:
    """True while aiohttp's RequestHandler handles a request (reads its body, writes its answer)."""
    return bool(getattr(handler, "_request_in_progress", False))  # aiohttp's own flag (3.8+)


__all__ = ["ConnectionCap", "HEADROOM", "limit_for", "quiet_accept_errors"]
