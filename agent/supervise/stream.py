"""One stream's lifecycle: run FFmpeg, watch its progress for stalls, restart
with backoff, and keep what an operator needs to see (state, errors, counters).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.blocking import in_thread
from agent.config.model import StreamConfig
from agent.redact import redact
from agent.supervise import backoff, rtp_source
from agent.supervise.ffmpeg import Launch, Progress, ProgressParser, RtpTarget, build_argv, start_stamp
from agent.supervise.limits import spawn_refusal
from agent.supervise.process import Child, describe_exit
from agent.supervise.stall import StallWatch, watch_growth, watch_recording
from agent.supervise.states import StreamState, check_transition

log = logging.getLogger("vas.stream")
STDERR_LINES = 20
#: Longer stderr lines are cut (after redaction): 20 lines of 64 KiB per stream add up.
STDERR_LINE_MAX = 1000
#: Creating the recording directory longer than this (a hung NFS root) fails the start.
MKDIR_TIMEOUT = 5.0
#: The retry delay after an internal error when the policy's own cap is unusable.
FALLBACK_DELAY = 60.0
#: After this many consecutive failures, failures are logged at most every QUIET_LOG_INTERVAL.
LOUD_FAILURES = 3
QUIET_LOG_INTERVAL = 300.0
#: Seconds a templated stream's first spawn waits for its SFU producer while one is on its way (the
#: SFU starting, POST /producers under way): one spawn instead of a spawn and a restart (reason sfu).
#: Recording waits no longer than this; the stream then starts without RTP and is restarted once its
#: producer exists (docs/mediasoup-contract.md).
PRODUCER_WAIT = 10.0


@dataclass
class Host:
    """What every stream shares: where FFmpeg is, where recordings go, how to report.

    Mutable on purpose: a reload updates it in place for every stream.
    """

    ffmpeg: str
    recordings_root: Path
    secrets: frozenset[str]
    on_change: Callable[[bool], None]  # True: state changed (write now); False: counters only
    #: Set once the agent is shutting down: no stream starts a process after that.
    stopping: bool = False
    #: An SFU is configured: streams that feed it are ``live`` only once their producer is.
    sfu: bool = False
    #: Fleet mode: False while this node may not start processes (after a freeze, until etcd answered).
    may_spawn: Callable[[], bool] | None = None
    #: Fleet mode: told after every spawn (the lease fence learns the new process group).
    spawned: Callable[[], None] | None = None
    #: With an SFU: True while the stream's producer is on its way (the SFU starting, or up without it).
    producer_due: Callable[[str], bool] | None = None
    #: With an SFU: the producer's RTP source port is taken; make a new producer (agent/sfu/producers.py).
    source_port_taken: Callable[[str], Coroutine[Any, Any, None]] | None = None
    #: With an SFU: an FFmpeg run started sending RTP; check the source's H.264 profile is the producer's.
    rtp_spawned: Callable[[str], Coroutine[Any, Any, None]] | None = None


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
        self.progressed_at: float | None = None  # the same, monotonic: compared with child.started_at
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
        self._stall: StallWatch | None = None
        self._mkdir_busy = False  # a mkdir thread has not returned yet (hung file system)
        self._ended_at: float | None = None  # loop time the last run's process exited: its backoff counts from it
        self._last_start_ms = 0
        #: Fleet mode: the ownership epoch (etcd revision), a fencing token in segment names; 0 otherwise.
        self.epoch = 0
        #: The SFU producer's address (set by the producer manager) and what the process uses.
        self.rtp: RtpTarget | None = None
        self.rtp_running: RtpTarget | None = None
        self.producer_confirmed = False
        self.producer: Any = None  # producers.Producer, kept by the producer manager
        self._producer_wait_spent = False  # waited PRODUCER_WAIT in vain: do not wait again until one comes
        self._tasks: set[asyncio.Task[None]] = set()  # fire-and-forget calls to the producer manager
        #: ``{"codec", "width", "height"}`` of the running process's video, probed once per spawn (None: unknown).
        self.video: dict[str, Any] | None = None
        self._video_probe: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    @property
    def feeds_sfu(self) -> bool:
        """True when this stream's process should send RTP to an SFU producer."""
        return self.host.sfu and self.cfg.enabled and self.cfg.sends_rtp

    # -- the SFU side (driven by the producer manager) -----------------------
    async def use_producer(self, target: RtpTarget | None) -> None:
        """Point the stream at its producer; a running process is restarted (reason ``sfu``)."""
        if target == self.rtp:
            return
        self.rtp, self.producer_confirmed = target, False
        self._changed(True)
        if target is None:
            return  # SFU gone: keep recording; RTP goes nowhere until a new producer exists
        self._producer_wait_spent = False
        self._wake.set()  # a first spawn waiting for the address, or a backoff
        if self.child is not None and self.rtp_running != target:
            await self.restart("sfu")

    def confirm_producer(self, confirmed: bool) -> None:
        """The SFU receives (or stopped receiving) this stream's packets."""
        self.producer_confirmed = confirmed
        if confirmed and self.state is StreamState.READY and self._live_now():
            self._set_state(StreamState.LIVE)
        elif not confirmed and self.state is StreamState.LIVE and self.feeds_sfu:
            log.warning("degraded: %s (the SFU receives no packets while FFmpeg makes progress)", self.cfg.id)
            self._set_state(StreamState.READY)

    def _live_now(self) -> bool:
        if not self.feeds_sfu:
            return True  # no SFU: media flowing is all "live" needs
        return self.rtp_running is not None and self.rtp_running == self.rtp and self.producer_confirmed

    def _media_flowing(self) -> None:
        if self.state is StreamState.INITIALIZING:
            self._set_state(StreamState.READY)
        if self.state is StreamState.READY and self._live_now():
            self._set_state(StreamState.LIVE)

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
        for task in list(self._tasks):
            task.cancel()
        if self.child:
            await self.child.stop(self.cfg.stop_timeout)
        if self._task:
            await asyncio.wait([self._task])  # never raises: a crashed loop must not stop close()
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
        if self._revive():  # the loop had ended: its new first run is the restart
            await spawned
            return
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
        else:
            self._revive()
            if self._stall is not None:
                self._stall.reconfigure()  # e.g. stall_timeout 0 -> 20s on a running process

    def _revive(self) -> bool:
        """Start the supervision loop again if it ended (a bug): never leave a camera unwatched."""
        if self._task is not None and self._task.done() and not self._closing:
            log.error("supervision of %s had ended; starting it again", self.cfg.id)
            self._task = None
            self.start()
            return True
        return False

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
        try:
            while not (self._closing or self.host.stopping):
                try:
                    delay = await self._supervise_once()
                except Exception as exc:  # a bug must not leave the camera unsupervised
                    delay = await self._internal_error(exc)
                if delay is not None:
                    await self._back_off(delay)
                    self._pending = None  # a restart asked for during the backoff just ends it early
        finally:
            self._spawn_done()  # nobody may wait forever on a loop that has ended

    async def _supervise_once(self) -> float | None:
        """One run and its aftermath: the backoff delay, or None to start again at once."""
        reason, uptime = await self._run_once()
        if self._closing or self.host.stopping:
            return None
        self._count_restart(reason)
        if reason in ("config", "manual"):
            return None  # asked for: no backoff
        self._attempt = backoff.next_attempt(self.cfg.restart, self._attempt, uptime)
        delay = backoff.restart_delay(self.cfg.restart, self._attempt)
        if self.state is StreamState.ERROR and self.last_exit:
            self._log_failure(self.last_exit["description"], delay)
        return delay

    async def _internal_error(self, exc: Exception) -> float | None:
        """Log a bug, show ``error``, stop any child, and retry at the backoff cap."""
        cap = self.cfg.restart.max_delay
        delay = cap if math.isfinite(cap) and cap > 0 else FALLBACK_DELAY
        log.exception("internal error supervising %s (%r); retrying in %gs", self.cfg.id, exc, delay)
        try:
            if self.child is not None:
                await self.child.stop(self.cfg.stop_timeout)
                self.child = None
            self._pending = None
            if self.state is not StreamState.STOPPED:
                self._failed(f"internal error: {exc!r}", "exit")
        except Exception:
            log.exception("cleaning up after the internal error in %s failed", self.cfg.id)
        return None if self._closing else delay

    def _count_restart(self, reason: str) -> None:
        self._pending = None
        self.restarts += 1
        self.restart_reasons[reason] += 1

    async def _run_once(self) -> tuple[str, float]:
        """Spawn and supervise one process; return the restart reason and its uptime."""
        self._set_state(StreamState.INITIALIZING)
        self._wake.clear()
        self._ended_at = None
        launch = self._launch()
        parser, stall = ProgressParser(), StallWatch(self)
        if self.feeds_sfu and not await self._await_rtp():
            return self._pending or "exit", 0.0
        if not await self._wait_for_fence():
            return self._pending or "exit", 0.0
        rtp = self.rtp if self.feeds_sfu else None
        try:
            seq = self.producer.next_seq() if rtp is not None and self.producer is not None else None
            argv = build_argv(self.cfg, launch, ffmpeg=self.host.ffmpeg, rtp=rtp, rtp_seq=seq)
            if self.cfg.recording.enabled:
                await self._make_dir(launch.recording_dir)
            if self._closing or self.host.stopping:
                return self._pending or "exit", 0.0
            refusal = spawn_refusal()
            if refusal:
                raise _CannotStart(refusal)
            self.child = await Child.spawn(
                argv, on_stdout=lambda data: self._on_progress(parser.feed(data), stall),
                on_stderr=self._on_stderr)
        except _CannotStart as exc:
            self._failed(str(exc), "exit")
            return self._pending or "exit", 0.0
        except OSError as exc:
            self._failed(f"cannot start {argv[0]}: {exc.strerror or exc}", "exit")
            return self._pending or "exit", 0.0
        finally:
            self._spawn_done()
        if self.host.spawned is not None:
            self.host.spawned()
        self._stall, self.rtp_running = stall, rtp
        log.info("spawned: '%s' with pid %d", self.cfg.id, self.child.pid)
        self._probe_video(launch)
        self._changed(True)
        if rtp is not None and self.cfg.command is None and self.host.rtp_spawned is not None:
            self._background(self.host.rtp_spawned(self.cfg.id))  # alongside: the common case costs no delay
        if self.feeds_sfu and self.rtp is not None and rtp != self.rtp and not self._pending:
            self._pending = "sfu"  # the producer came or changed while we were spawning: it found no child
        if self._closing or self._pending:  # close()/restart() came while we were spawning
            await self.child.stop(self.cfg.stop_timeout)
        watchers = self._watch_without_progress(launch, stall)
        if self.cfg.reports_progress or self.cfg.recording.enabled:
            stall.arm()  # without progress reports: stalls by recording growth
        try:
            status = await self.child.wait()
            self._ended_at = asyncio.get_running_loop().time()
        finally:
            stall.cancel()
            for watcher in watchers:
                watcher.cancel()
            self._stall, self.rtp_running = None, None
        uptime = time.monotonic() - self.child.started_at
        self.child = None
        reason = self._pending or ("stall" if stall.fired else "exit")
        if self._closing or self._pending:
            why = f"restart: {self._pending}" if self._pending else "stopping"
            log.info("stopped: %s (%s; %s)", self.cfg.id, describe_exit(status), why)
            if self._pending:
                self._set_state(StreamState.STOPPED)  # stopped on request; starts again at once
        else:
            detail = f"no progress for {self.cfg.stall_timeout:g}s" if stall.fired else describe_exit(status)
            self._failed(detail, reason, status)
        return reason, uptime

    def _reopen_recording(self) -> None:
        log.warning("recording stopped: %s (no new segment while media flows, and the disk has room); "
                    "restarting to reopen it", self.cfg.id)
        asyncio.get_running_loop().create_task(self.restart("stall"))

    async def _await_rtp(self) -> bool:
        """Before a spawn: the producer's address with a source port we can bind; False: do not spawn.

        A verbatim command with RTP placeholders needs the address: it waits as
        long as it takes.  A templated one waits up to PRODUCER_WAIT while its
        producer is on its way, then starts recording without RTP.
        """
        replacing = self._check_source_port()
        if self.cfg.command is not None:
            return await self._wait_for_producer(None)
        due = self.host.producer_due is not None and self.host.producer_due(self.cfg.id)
        if self.rtp is None and (replacing or (due and not self._producer_wait_spent)):
            if not await self._wait_for_producer(PRODUCER_WAIT):
                return False
            if self.rtp is None:
                self._producer_wait_spent = True
                log.warning("%s: no SFU producer within %gs; starting without RTP (restarted once it exists)",
                            self.cfg.id, PRODUCER_WAIT)
        return True

    def _check_source_port(self) -> bool:
        """The producer's source port must be free for FFmpeg; if not, ask for a new producer (True)."""
        rtp = self.rtp
        if rtp is None or rtp.source_port is None or rtp_source.can_bind(rtp.source_port, rtp.host):
            return False
        log.warning("%s: RTP source port %d (or %d for RTCP) is taken; making a new producer",
                    self.cfg.id, rtp.source_port, rtp.source_port + 1)
        self.rtp = None
        if self.host.source_port_taken is None:
            return False
        self._background(self.host.source_port_taken(self.cfg.id))
        return True

    def _probe_video(self, launch: Launch) -> None:
        """Forget the last run's codec and resolution and probe this run's (agent/supervise/video_probe.py);
        a probe still waiting for an earlier run's first segment is cancelled."""
        from agent.supervise.video_probe import probe_spawn
        if self._video_probe is not None:
            self._video_probe.cancel()
        self.video = None

        async def probe() -> None:
            video = await probe_spawn(self.host.ffmpeg, self.cfg, launch)
            if video is not None:
                self.video = video
                self._changed(False)
        self._video_probe = asyncio.get_running_loop().create_task(probe(), name=f"video-probe:{self.cfg.id}")
        self._tasks.add(self._video_probe)
        self._video_probe.add_done_callback(self._tasks.discard)

    def _background(self, call: Coroutine[Any, Any, None]) -> None:
        """Run a call to the producer manager without waiting for it (cancelled by ``close()``)."""
        task = asyncio.get_running_loop().create_task(call)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait_for_producer(self, timeout: float | None) -> bool:
        """Wait for the producer's address (``timeout`` None: for ever); False: stop waiting, do not spawn."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.rtp is None:
            if self._closing or self.host.stopping or self._pending:
                return False
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return True
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                pass
        self._wake.clear()  # the producer's wake-up is used up: it must not cut this run's next backoff short
        return True

    async def _wait_for_fence(self) -> bool:
        """Fleet mode: after a freeze, start nothing until etcd says this node still owns the stream."""
        while self.host.may_spawn is not None and not self.host.may_spawn():
            if self._closing or self.host.stopping or self._pending:
                return False
            await asyncio.sleep(0.1)  # a freeze is rare and short-lived: polling is simplest
        return True

    def _watch_without_progress(self, launch: Launch, stall: StallWatch) -> list[asyncio.Handle | asyncio.Task]:
        """A command without ``{progress}``: ready after ``ready_after`` up or a new segment.

        A templated stream with a tee output (recording + RTP) gets a recording
        watch instead, which reopens a recording output a full disk dropped.
        """
        if self.cfg.reports_progress:
            if self.cfg.command is None and self.cfg.recording.enabled and self.rtp_running is not None:
                return [asyncio.get_running_loop().create_task(watch_recording(
                    Path(launch.playlist), self.cfg.recording.segment_duration,
                    media_flowing=lambda: self.state in (StreamState.READY, StreamState.LIVE),
                    reopen=self._reopen_recording))]
            return []
        loop = asyncio.get_running_loop()
        watchers: list[asyncio.Handle | asyncio.Task] = [loop.call_later(self.cfg.ready_after, self._media_flowing)]
        if self.cfg.recording.enabled:
            watchers.append(loop.create_task(watch_growth(launch.recording_dir, stall, self._media_flowing)))
        return watchers

    async def _make_dir(self, path: Path) -> None:
        """Create the recording directory off the event loop, within MKDIR_TIMEOUT."""
        if self._mkdir_busy:  # one hung thread per stream at most
            raise _CannotStart(f"recording directory {path}: an earlier mkdir still hangs")
        self._mkdir_busy = True

        def mkdir() -> None:
            try:
                path.mkdir(parents=True, exist_ok=True)
            finally:
                self._mkdir_busy = False

        try:
            await in_thread(mkdir, timeout=MKDIR_TIMEOUT, name=f"mkdir:{self.cfg.id}")
        except TimeoutError:
            raise _CannotStart(f"recording directory {path}: no answer in {MKDIR_TIMEOUT:g}s "
                               "(hung file system?)") from None
        except OSError as exc:
            raise _CannotStart(f"cannot create recording directory {path}: {exc.strerror or exc}") from None

    def _launch(self) -> Launch:
        # Strictly increasing per stream, so two starts in one millisecond can't share names.
        self._last_start_ms = max(int(time.time() * 1000), self._last_start_ms + 1)
        stamp = start_stamp(self._last_start_ms) + (f"-e{self.epoch}" if self.epoch else "")
        return Launch(self.host.recordings_root / self.cfg.id, stamp)

    async def _back_off(self, delay: float) -> None:
        """Wait ``delay`` counted from the process's exit (from now when none ran); a wake ends it early.

        From the exit: what the loop does after it (the failure's log line, the state change) is
        part of the delay, not added to every restart.
        """
        loop = asyncio.get_running_loop()
        deadline = (loop.time() if self._ended_at is None else self._ended_at) + delay
        self._ended_at = None
        self.next_restart_at = time.time() + max(0.0, deadline - loop.time())
        self._changed(True)
        try:
            # Not wait_for: it runs the wait as a task of its own and takes three more turns of the
            # loop to cancel it, each one added to every restart.
            async with asyncio.timeout_at(deadline):
                await self._wake.wait()
        except TimeoutError:
            pass
        self.next_restart_at = None
        self._changed(False)

    # -- events from the child -------------------------------------------------
    def _on_progress(self, reports: list[Progress], stall: StallWatch) -> None:
        for report in reports:
            # Compare within this run only: a new FFmpeg counts from zero again.
            if report.advanced_from(stall.report):
                stall.report = report
                stall.touch()
                self.last_progress_at, self.progressed_at = time.time(), time.monotonic()
                if self.state is StreamState.INITIALIZING:
                    self._media_flowing()
            self.progress = report
        if reports:
            self._changed(False)

    def _on_stderr(self, line: str) -> None:
        self.stderr.append(redact(line, self.host.secrets)[:STDERR_LINE_MAX])
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

    def mark_changed(self) -> None:
        """Something shown of this stream changed outside it (producer counters)."""
        self._changed(False)

    def _changed(self, state_changed: bool) -> None:
        """Every change to what the snapshot shows of this stream comes through here."""
        self.view_json = None
        self.host.on_change(state_changed)


class _CannotStart(Exception):
    """The process could not be started; the message says why (shown as the failure)."""
