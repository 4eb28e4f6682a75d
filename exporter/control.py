"""The exporter's way to change anything: HTTP to the agent's control socket."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

TIMEOUT = 60.0  # a cleanup of a big tree may take a while


class AgentUnreachable(Exception):
    """The control socket is missing, refused, or did not answer."""


class AgentControl:
    """One aiohttp session over the unix socket; ``close()`` twice is fine."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._session: aiohttp.ClientSession | None = None

    async def call(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        """``(status, JSON body)`` of one request to the agent."""
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.socket_path)))
        try:
            async with self._session.request(method, f"http://agent{path}",
                                             timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise AgentUnreachable(f"the agent does not answer on {self.socket_path}: {type(exc).__name__}") from None
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {"error": text[:200]}
        return status, body if isinstance(body, dict) else {"result": body}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
