"""The exporter's way to change anything: HTTP to the agent's control socket.

A 503 from here means "not applied": nothing is sent while the agent's snapshot
is stale (api.py checks first), and every request carries a deadline to start
(``X-Vas-Start-By``) after which the agent drops it unread (agent/control.py),
so a request the exporter gave up on is never applied later behind its back.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from agent.client import LINES, START_BY, reading_lines

from .turns import in_turns

#: Seconds the agent has to start a call, then seconds the call itself may take, per kind.
KINDS = {"heartbeat": (2.0, 1.0), "consumer": (2.0, 8.0), "cleanup": (2.0, 58.0), "index": (2.0, 8.0)}
#: While waiting, how often the agent's liveness (its snapshot) is looked at.
ALIVE_CHECK = 0.5


class AgentUnreachable(Exception):
    """The control socket is missing, refused, or did not answer: nothing was applied."""


def kind_of(path: str) -> str:
    """The call kind of a control path (its timeouts)."""
    if path.startswith("/recordings/"):
        return "cleanup"
    if path.startswith("/index/"):
        return "index"  # the console's read-only questions to the retention index
    return "heartbeat" if path.endswith("/heartbeat") else "consumer"


class AgentControl:
    """One aiohttp session over the unix socket; ``close()`` twice is fine."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._session: aiohttp.ClientSession | None = None

    async def call(self, method: str, path: str, *, alive: Callable[[], bool] = lambda: True
                   ) -> tuple[int, dict[str, Any]]:
        """``(status, JSON body)`` of one request to the agent.

        Gives up (AgentUnreachable) when the kind's time is out, or once its start window
        has passed while ``alive()`` says the agent stopped proving it is alive: either
        way the agent drops the request if it reads it later.
        """
        start, work = KINDS[kind_of(path)]
        task = asyncio.create_task(self._request(method, path, start, start + work))
        give_up_at = time.monotonic() + start + work
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=ALIVE_CHECK)
                if done:
                    return task.result()
                now = time.monotonic()
                if now >= give_up_at or (now >= give_up_at - work and not alive()):
                    raise AgentUnreachable(f"the agent did not answer within {now - give_up_at + start + work:.1f}s; "
                                           "it drops requests it reads after their deadline: not applied")
        finally:
            task.cancel()

    async def _request(self, method: str, path: str, start: float, timeout: float) -> tuple[int, dict[str, Any]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.socket_path)))
        headers = {START_BY: f"{time.monotonic() + start:.3f}"}
        try:
            async with self._session.request(method, f"http://agent{path}", headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                raw = await resp.read()
                status, lines = resp.status, resp.content_type == LINES
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise AgentUnreachable(f"the agent does not answer on {self.socket_path}: {type(exc).__name__}; "
                                   "not applied") from None
        try:  # an index answer may be megabytes (a month of segments): read a line per turn of the loop
            body = await in_turns(reading_lines(raw)) if lines else json.loads(raw) if raw else {}
        except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
            body = {"error": raw[:200].decode(errors="replace")}
        return status, body if isinstance(body, dict) else {"result": body}

    async def close(self) -> None:
        """Close the session (safe to call twice)."""
        if self._session is not None:
            await self._session.close()
            self._session = None
