"""One stream's lifecycle: run FFmpeg, watch its progress for stalls, restart
with backoff, and keep what an operator needs to see (state, errors, counters).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import backoff
from .config import StreamConfig
from .redact import redact
from .ffmpeg import Launch, Progress, ProgressParser, build_argv, start_stamp
from .process import Child, describe_exit
from .states import StreamState, check_transition

log = logging.getLogger("vas.stream")
STDERR_LINES = 20
#: After this many consecutive failures, failures are logged at most every QUIET_LOG_INTERVAL.
LOUD_FAILURES = 3
QUIET_LOG_INTERVAL = 300.0


@dataclass
class Host:
    """What every stream shares: where FFmpeg is, where recordings go, how to report.

    Mutable on purpose: a reload updates it in place for every stream.
    """

    ffmpeg: str
    recordings_root: Path
    secrets: frozenset[str]
    on_change: Callable[[bool], None]  # True: state changed (write now); False: counters only


class Stream:
    """Supervises one stream.  ``start()`` once; ``close()`` stops it for good."""

    def __init__(self, cfg: StreamConfig, host: Host) -> None:
        self.cfg, self.host = cfg, host
        self.state = StreamState.STOPPED
        self.since = time.time()
        self.restarts = 0
        self.restart_reasons: collections.Counter[str] = collections.Counter()
        self.last_exit: dict | None = None
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.next_restart_at: float | None = None
        self.progress: Progress | None = None
        self.last_progress_at: float | None = None  # wall clock, for the snapshot
        self.child: Child | None = None
        #: This stream's snapshot entry as JSON, kept until something shown changes.
        self.view_json: str | None = None
        self._attempt = 0
        self._failures_logged_at = 0.0
        self._suppressed = 0
        self._pending: str | None = None  # reason of a requested restart
        self._closing = False
        self._wake = asyncio.Event()
        self._spawn_waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._last_start_ms = 0

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    # -- control -------------------------------------------------------------
    def start(self) -> None:
        """Begin supervising (a disabled stream just shows as ``stopped``)."""
        if self.cfg.enabled and self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name=f"stream:{self.cfg.id}")

    async def close(self) -> None:
        """Stop the process (TERM, then KILL after ``stop_timeout``) and stay stopped."""
        self._closing = True
        self._wake.set()
        if self.child:
            await self.child.stop(self.cfg.stop_timeout)
        if self._task:
            await self._task
            self._task = None
        self._spawn_done()
        self._set_state(StreamState.STOPPED)

    async def restart(self, reason: str) -> None:
        """Replace the process now, skipping any backoff.

        Counted under ``reason`` when a process was running; during a backoff it
        only ends the wait (that restart is already counted as ``exit``/``stall``).
        """
        if self._task is None:
            return
        spawned = self._next_spawn()
        self._pending = reason
        self._wake.set()
        if self.child:
            await self.child.stop(self.cfg.stop_timeout)
        await spawned

    async def apply(self, cfg: StreamConfig, *, restart: bool) -> None:
        """Take new settings; ``restart`` when they change the FFmpeg command."""
        self.cfg = cfg
        self._changed(True)
        if not cfg.enabled:
            await self.close()
        elif self._task is None:
            spawned = self._next_spawn()
            self.start()
            await spawned
        elif restart:
            await self.restart("config")

    def _next_spawn(self) -> asyncio.Future[None]:
        """A future resolved once the next process has been started (or failed to)."""
        waiter = asyncio.get_running_loop().create_future()
        self._spawn_waiters.append(waiter)
        return waiter

    def _spawn_done(self) -> None:
        for waiter in self._spawn_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._spawn_waiters.clear()

    # -- the supervision loop -------------------------------------------------
    async def _run(self) -> None:
        while not self._closing:
            try:
                reason, uptime = await self._run_once()
            except Exception:  # a bug must not leave the camera unsupervised
                log.exception("internal error supervising %s; restarting it", self.cfg.id)
                reason, uptime = "exit", 0.0
            if self._closing:
                break
            self._count_restart(reason)
            if reason in ("config", "manual"):
                continue  # asked for: no backoff
            self._attempt = backoff.next_attempt(self.cfg.restart, self._attempt, uptime)
            delay = backoff.restart_delay(self.cfg.restart, self._attempt)
            if self.state is StreamState.ERROR and self.last_exit:
                self._log_failure(self.last_exit["description"], delay)
            await self._back_off(delay)
            self._pending = None  # a restart asked for during the backoff just ends it early

    def _count_restart(self, reason: str) -> None:
        self._pending = None
        self.restarts += 1
        self.restart_reasons[reason] += 1

    async def _run_once(self) -> tuple[str, float]:
        """Spawn and supervise one process; return the restart reason and its uptime."""
        launch = self._launch()
        argv = build_argv(self.cfg, launch, ffmpeg=self.host.ffmpeg)
        parser, stall = ProgressParser(), _StallWatch(self)
        self._wake.clear()
        self._set_state(StreamState.INITIALIZING)
        try:
            if self.cfg.recording.enabled:
                launch.recording_dir.mkdir(parents=True, exist_ok=True)
            self.child = await Child.spawn(
                argv, on_stdout=lambda data: self._on_progress(parser.feed(data), stall),
                on_stderr=self._on_stderr)
        except OSError as exc:
            self._failed(f"cannot start {argv[0]}: {exc.strerror or exc}", "exit")
            return self._pending or "exit", 0.0
        finally:
            self._spawn_done()
        log.info("spawned: '%s' with pid %d", self.cfg.id, self.child.pid)
        self._changed(True)
        if self._closing or self._pending:  # close()/restart() came while we were spawning
            await self.child.stop(self.cfg.stop_timeout)
        stall.arm()
        status = await self.child.wait()
        stall.cancel()
        uptime = time.monotonic() - self.child.started_at
        self.child = None
        reason = self._pending or ("stall" if stall.fired else "exit")
        if self._closing or self._pending:
            why = f"restart: {self._pending}" if self._pending else "stopping"
            log.info("stopped: %s (%s; %s)", self.cfg.id, describe_exit(status), why)
            if self._pending:
                self._set_state(StreamState.STOPPED)  # stopped on request; starts again at once
        else:
            detail = "no progress for %gs" % self.cfg.stall_timeout if stall.fired else describe_exit(status)
            self._failed(detail, reason, status)
        return reason, uptime

    def _launch(self) -> Launch:
        # Strictly increasing per stream, so two starts in one millisecond can't share names.
        self._last_start_ms = max(int(time.time() * 1000), self._last_start_ms + 1)
        return Launch(self.host.recordings_root / self.cfg.id, start_stamp(self._last_start_ms))

    async def _back_off(self, delay: float) -> None:
        self.next_restart_at = time.time() + delay
        self._changed(True)
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except TimeoutError:
            pass
        self.next_restart_at = None
        self._changed(False)

    # -- events from the child -------------------------------------------------
    def _on_progress(self, reports: list[Progress], stall: _StallWatch) -> None:
        for report in reports:
            # Compare within this run only: a new FFmpeg counts from zero again.
            if report.advanced_from(stall.report):
                stall.report = report
                stall.touch()
                self.last_progress_at = time.time()
                if self.state is StreamState.INITIALIZING:
                    self._set_state(StreamState.READY)
                    # No SFU configured (yet): media flowing is all "live" needs.
                    self._set_state(StreamState.LIVE)
            self.progress = report
        if reports:
            self._changed(False)

    def _on_stderr(self, line: str) -> None:
        self.stderr.append(redact(line, self.host.secrets))
        self._changed(False)

    def _failed(self, detail: str, reason: str, status: int | None = None) -> None:
        self.last_exit = {"at": time.time(), "status": status, "reason": reason,
                          "description": detail}
        self._set_state(StreamState.ERROR)

    def _log_failure(self, detail: str, delay: float) -> None:
        """Log every failure of a flapping stream at first, then one line per interval."""
        now = time.monotonic()
        if self._attempt > LOUD_FAILURES and now - self._failures_logged_at < QUIET_LOG_INTERVAL:
            self._suppressed += 1
            return
        tail = f"; last error: {self.stderr[-1]}" if self.stderr else ""
        more = f" ({self._suppressed} similar failures not logged)" if self._suppressed else ""
        log.warning("exited: %s (%s; not expected); retry %d in %.1fs%s%s",
                    self.cfg.id, detail, self._attempt, delay, more, tail)
        self._failures_logged_at, self._suppressed = now, 0

    def _set_state(self, new: StreamState) -> None:
        """The only place a stream's state changes (checked against the table)."""
        if new is self.state:
            return
        check_transition(self.state, new)
        self.state, self.since = new, time.time()
        self._changed(True)

    def _changed(self, state_changed: bool) -> None:
        """Every change to what the snapshot shows of this stream comes through here."""
        self.view_json = None
        self.host.on_change(state_changed)


class _StallWatch:
    """Kills the child when progress stops advancing for ``stall_timeout``.

    One timer per child that re-arms itself lazily: progress only records a
    timestamp, so a busy stream costs no timer churn.
    """

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.fired = False
        self.report: Progress | None = None  # last report that advanced, this run
        self._last = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        timeout = self.stream.cfg.stall_timeout
        if timeout > 0:
            self._last = time.monotonic()
            self._schedule(self._last + timeout)

    def touch(self) -> None:
        self._last = time.monotonic()

    def cancel(self) -> None:
        if self._handle:
            self._handle.cancel()

    def _schedule(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()), self._check)

    def _check(self) -> None:
        timeout = self.stream.cfg.stall_timeout
        if timeout <= 0:
            return
        deadline = self._last + timeout
        if time.monotonic() < deadline:
            self._schedule(deadline)
            return
        child = self.stream.child
        if child is not None:
            log.warning("stalled: %s (no progress for %gs), killing pid %d",
                        self.stream.cfg.id, timeout, child.pid)
            self.fired = True
            child.kill()
