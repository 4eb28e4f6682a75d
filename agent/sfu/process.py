"""The SFU process: the operator's MediaSoup server, run and watched like FFmpeg.

Spawned directly (never through npm or a shell) in its own process group,
dying with the agent; ready once ``GET {api_url}/health`` answers 200 within
``ready_timeout``; restarted with backoff when it exits, or when its health
check fails HEALTH_FAILURES times in a row (a hung server).  Every time it
becomes ready ``generation`` grows and ``on_up`` runs, so producers are
re-created; ``on_down`` tells the producer manager they are gone.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agent.config.model import MediasoupConfig
from agent.redact import redact
from agent.supervise import backoff
from agent.supervise.process import Child, describe_exit

log = logging.getLogger("vas.sfu")
HEALTH_INTERVAL = 2.0
#: Consecutive failed health checks of a running server before it is restarted.
HEALTH_FAILURES = 3
STDERR_LINES = 20


class Health(Protocol):
    """What the SFU process needs from the contract client."""

    async def health(self) -> bool: ...


class SfuProcess:
    """Supervises the SFU server.  ``start()`` once; ``close()`` stops it for good."""

    def __init__(self, cfg: MediasoupConfig, client: Health, *, secrets: frozenset[str],
                 on_up: Callable[[], Awaitable[None]], on_down: Callable[[], None],
                 on_change: Callable[[bool], None]) -> None:
        self.cfg, self.client, self.secrets = cfg, client, secrets
        self._on_up, self._on_down, self._on_change = on_up, on_down, on_change
        self.state = "stopped"  # starting -> up -> error (backoff) ...; external: no process
        self.since = time.time()
        self.generation = 0
        self.restarts = 0
        self.restart_reasons: collections.Counter[str] = collections.Counter()
        self.last_exit: dict[str, Any] | None = None
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.child: Child | None = None
        self._attempt = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self.state == "up"

    def start(self) -> None:
        """Begin supervising (or, without ``command``, watching an external server)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sfu")

    async def close(self) -> None:
        """Stop the server (TERM, then KILL after ``stop_timeout``); safe to call twice."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
        if self.child is not None:
            await self.child.stop(self.cfg.stop_timeout)
            self.child = None
        self._set("stopped")

    async def _run(self) -> None:
        while not self._closing:
            try:
                reason, uptime = await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not leave the SFU unsupervised
                log.exception("internal error supervising the SFU")
                reason, uptime = "exit", 0.0
                self._failed(f"internal error: {exc!r}", reason)
            self.restarts += 1
            self.restart_reasons[reason] += 1
            self._attempt = backoff.next_attempt(self.cfg.restart, self._attempt, uptime)
            delay = backoff.restart_delay(self.cfg.restart, self._attempt)
            log.warning("sfu: %s; retry %d in %.1fs", self.last_exit["description"] if self.last_exit else reason,
                        self._attempt, delay)
            await asyncio.sleep(delay)

    async def _run_once(self) -> tuple[str, float]:
        """One life of the server: start, wait for health, watch; the restart reason and uptime."""
        self._set("starting")
        started = time.monotonic()
        if self.cfg.command is not None:
            try:
                self.child = await Child.spawn(
                    self.cfg.command, env={**os.environ, **dict(self.cfg.env)}, cwd=self.cfg.cwd,
                    on_stdout=self._on_output, on_stderr=self._on_output)
            except OSError as exc:
                self._failed(f"cannot start {self.cfg.command[0]}: {exc.strerror or exc}", "exit")
                return "exit", 0.0
            log.info("spawned: sfu with pid %d", self.child.pid)
        generation = self.generation
        try:
            reason = await self._life()
        finally:
            # By now _end() has set "error": whether this life went up is told by the generation.
            if self.generation != generation:
                self._on_down()
        return reason, time.monotonic() - started

    async def _life(self) -> str:
        ready = await self._wait_ready()
        if ready == "exit":
            return await self._end("exit", None)
        if ready == "timeout":
            return await self._end("stall", f"not ready: /health did not answer 200 within {self.cfg.ready_timeout:g}s")
        self.generation += 1
        self._set("up")
        log.info("sfu: ready (generation %d)", self.generation)
        await self._on_up()
        failures = 0
        while failures < HEALTH_FAILURES:
            if await self._exited_within(HEALTH_INTERVAL):
                return await self._end("exit", None)
            failures = 0 if await self.client.health() else failures + 1
        return await self._end("stall", f"hung: /health failed {HEALTH_FAILURES} times in a row")

    async def _wait_ready(self) -> str:
        """``up`` once /health answers 200, ``exit`` if the process died first, else ``timeout``."""
        deadline = time.monotonic() + self.cfg.ready_timeout
        while time.monotonic() < deadline:
            if await self.client.health():
                return "up"
            if await self._exited_within(0.2):
                return "exit"
        return "timeout"

    async def _exited_within(self, seconds: float) -> bool:
        if self.child is None:
            await asyncio.sleep(seconds)
            return False
        return await self.child.exited_within(seconds)

    async def _end(self, reason: str, detail: str | None) -> str:
        """Stop what is left of this life and record why it ended."""
        if self.child is not None:
            if detail is not None:
                log.warning("sfu: %s; killing pid %d", detail, self.child.pid)
            status = await self.child.stop(self.cfg.stop_timeout)
            self.child = None
            detail = detail or f"exited ({describe_exit(status)}; not expected)"
            self._failed(detail, reason, status)
        else:  # external server: it is down or hung, and not ours to restart
            self._failed(detail or "stopped answering", reason)
        return reason

    def _failed(self, detail: str, reason: str, status: int | None = None) -> None:
        self.last_exit = {"at": time.time(), "status": status, "reason": reason, "description": detail}
        self._set("error")

    def _on_output(self, data: bytes | str) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        for line in text.splitlines()[-STDERR_LINES:]:
            if line.strip():
                self.stderr.append(redact(line, self.secrets)[:1000])
        self._on_change(False)

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state, self.since = state, time.time()
            self._on_change(True)

    def view(self) -> dict[str, Any]:
        """The SFU as the snapshot shows it."""
        from agent.redact import redact_url
        return {"configured": True, "managed": self.cfg.command is not None, "state": self.state,
                "since": self.since, "api_url": redact_url(self.cfg.api_url),
                "pid": self.child.pid if self.child else None,
                "pid_started_at": self.child.wall_started_at if self.child else None,
                "generation": self.generation, "restarts": self.restarts,
                "restart_reasons": dict(self.restart_reasons), "last_exit": self.last_exit,
                "last_error": list(self.stderr)}
