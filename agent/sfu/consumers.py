"""Viewer sessions: the SFU's consumers, kept alive by heartbeats.

The agent follows the SFU's consumer list (``GET /consumers`` every
POLL_INTERVAL), takes heartbeats (exporter -> control socket), and closes a
consumer whose last heartbeat is older than ``heartbeat_timeout`` (reason
``stale``, checked every ``sweep_interval``) or on an operator's request
(reason ``admin``).  Ended sessions feed a duration histogram; consumer and
client ids never become metric labels (the exporter only sees counts).
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.config.model import ConsumersConfig

log = logging.getLogger("vas.sfu")
POLL_INTERVAL = 5.0
#: A sleep this late means the agent itself was paused (agent/supervise/stall.py uses the same figure).
PAUSE_GAP = 1.0
#: Upper bounds (seconds) of the session-duration histogram's buckets.
DURATION_BUCKETS = (10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 43200.0, 86400.0)


class ConsumerApi(Protocol):
    """The part of the SFU contract consumers need (agent/sfu/client.py)."""

    async def consumers(self) -> list[Any]: ...
    async def delete_consumer(self, consumer_id: str) -> bool: ...


@dataclass
class Session:
    """One viewer's consumer as the agent follows it."""

    consumer_id: str
    stream_id: str
    client_id: str
    created_at: float
    last_heartbeat: float  # the first sighting counts as one: a new viewer gets a full timeout
    #: The same moment on the monotonic clock: staleness never follows a wall-clock step.
    heartbeat_mono: float = field(default_factory=time.monotonic)

    def view(self) -> dict[str, Any]:
        return {"consumer_id": self.consumer_id, "stream_id": self.stream_id, "client_id": self.client_id,
                "created_at": self.created_at, "last_heartbeat": self.last_heartbeat}


class ConsumerTracker:
    """Follows consumers while the SFU is up; ``sfu_up()`` / ``sfu_down()`` / ``close()``."""

    def __init__(self, api: ConsumerApi, cfg: ConsumersConfig, *, on_change: Callable[[bool], None]) -> None:
        self.api, self.cfg, self._on_change = api, cfg, on_change
        self.sessions: dict[str, Session] = {}
        self.ended: collections.Counter[str] = collections.Counter()
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)  # the last one is +Inf
        self.duration_sum = 0.0
        self._task: asyncio.Task[None] | None = None

    def sfu_up(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._follow(), name="consumers")

    def sfu_down(self) -> None:
        """The SFU is gone, and every consumer with it."""
        self._stop()
        for cid in list(self.sessions):
            self._end(cid, "sfu")

    async def close(self) -> None:
        task = self._stop()
        if task is not None:
            await asyncio.wait([task])

    def _stop(self) -> asyncio.Task[None] | None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        return task

    async def heartbeat(self, consumer_id: str) -> bool:
        """Record a heartbeat; False for a consumer the SFU does not have."""
        if consumer_id not in self.sessions:
            await self.refresh()  # it may be newer than our last look
        session = self.sessions.get(consumer_id)
        if session is None:
            return False
        session.last_heartbeat, session.heartbeat_mono = time.time(), time.monotonic()
        self._on_change(False)
        return True

    async def close_consumer(self, consumer_id: str, reason: str) -> bool:
        """Close it at the SFU and end its session; False when it does not exist."""
        if consumer_id not in self.sessions:
            await self.refresh()
        if consumer_id not in self.sessions:
            return False
        await self.api.delete_consumer(consumer_id)  # SfuError goes to the caller
        self._end(consumer_id, reason)
        log.info("consumers: closed %s (%s)", consumer_id, reason)
        return True

    async def refresh(self) -> None:
        """Take the SFU's list: new consumers start a session, vanished ones end (``gone``)."""
        try:
            listed = await self.api.consumers()
        except Exception as exc:
            log.warning("consumers: cannot list: %s", exc)
            return
        now, seen = time.time(), set()
        for c in listed:
            seen.add(c.consumer_id)
            if c.consumer_id not in self.sessions:
                self.sessions[c.consumer_id] = Session(c.consumer_id, c.stream_id, c.client_id, c.created_at, now)
        for cid in set(self.sessions) - seen:
            self._end(cid, "gone")
        self._on_change(True)

    async def sweep(self) -> None:
        """Close every consumer without a heartbeat for ``heartbeat_timeout``."""
        cutoff = time.monotonic() - self.cfg.heartbeat_timeout
        for session in [s for s in self.sessions.values() if s.heartbeat_mono < cutoff]:
            try:
                await self.close_consumer(session.consumer_id, "stale")
            except Exception as exc:
                log.warning("consumers: cannot close stale %s: %s", session.consumer_id, exc)

    async def _follow(self) -> None:
        last_sweep = time.monotonic()
        while True:
            await self.refresh()
            if time.monotonic() - last_sweep >= self.cfg.sweep_interval:
                last_sweep = time.monotonic()
                await self.sweep()
            pause = min(POLL_INTERVAL, self.cfg.sweep_interval)
            before = time.monotonic()
            await asyncio.sleep(pause)
            self.credit_pause(time.monotonic() - before - pause)

    def credit_pause(self, late: float) -> None:
        """A sleep that ended ``late`` seconds late: the agent itself did not run (SIGSTOP, a VM
        freeze).  Heartbeats could not reach it meanwhile, so that time is not the viewers'
        silence: every session's heartbeat moves on by it (else all would be swept at once)."""
        if late <= PAUSE_GAP:
            return
        log.info("consumers: the agent did not run for %.1fs; viewers' heartbeat clocks moved on by that", late)
        for session in self.sessions.values():
            session.heartbeat_mono += late

    def _end(self, consumer_id: str, reason: str) -> None:
        session = self.sessions.pop(consumer_id, None)
        if session is None:
            return
        duration = max(0.0, time.time() - session.created_at)
        self.ended[reason] += 1
        self.duration_sum += duration
        self.buckets[next((i for i, b in enumerate(DURATION_BUCKETS) if duration <= b), len(DURATION_BUCKETS))] += 1
        self._on_change(True)

    def view(self) -> dict[str, Any]:
        """Sessions as the snapshot shows them (ids here are for the health API, not metrics)."""
        per_stream = collections.Counter(s.stream_id for s in self.sessions.values())
        return {"active": [s.view() for s in self.sessions.values()], "per_stream": dict(per_stream),
                "ended": dict(self.ended),
                "session_duration_seconds": {
                    # Cumulative, as Prometheus histograms count: [upper bound, sessions <= it].
                    "buckets": [[b, n] for b, n in zip([*DURATION_BUCKETS, "+Inf"],
                                                       itertools.accumulate(self.buckets))],
                    "sum": self.duration_sum, "count": sum(self.buckets)},
                "heartbeat_timeout_seconds": self.cfg.heartbeat_timeout}
