"""The agent: owns the streams, the snapshot and the control socket; handles
signals, sd_notify and reloads.
"""
from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import os
import signal
import time
from typing import Any

from . import config as config_mod
from . import snapshot
from .orphans import kill_orphans
from .reload import ReloadPlan, plan_reload
from .sdnotify import Notifier
from .states import StreamState
from .stream import Host, Stream
from .views import snapshot_json

log = logging.getLogger("vas.agent")
#: State changes within this window are written as one snapshot.
FLUSH_DELAY = 0.05
#: Progress counters alone rewrite the snapshot at most this often.
PROGRESS_FLUSH_INTERVAL = 5.0


def _settle_gc(*, full: bool) -> None:
    """Move what exists now (modules, streams, config) out of the collector's sight.

    With hundreds of streams a full collection walks every long-lived object
    and paused the event loop for 40-90 ms in the middle of reloads and
    respawns.  Frozen objects are still freed by reference counting; only
    cyclic garbage already present is kept, so collect the young first.
    """
    gc.collect(2 if full else 1)
    gc.freeze()


class AlreadyRunning(RuntimeError):
    """Another agent holds this runtime_dir."""


class ReloadInProgress(RuntimeError):
    """A reload is already being applied."""


class Agent:
    """Keeps every configured stream running.  ``start()``, then ``close()`` once done."""

    def __init__(self, cfg: config_mod.Config, *, env: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.env = env
        self.started_at = time.time()
        self.streams: dict[str, Stream] = {}
        self.status = "starting"
        self.last_reload: dict[str, Any] | None = None
        self.needs_restart: tuple[str, ...] = ()
        self.notifier = Notifier(env)
        self.host = Host(ffmpeg=cfg.node.ffmpeg, recordings_root=cfg.recordings_root,
                         secrets=cfg.secrets, on_change=self._changed)
        self.runtime_dir = cfg.node.runtime_dir
        self.snapshot_path = self.runtime_dir / snapshot.SNAPSHOT_NAME
        self._reload_lock = asyncio.Lock()
        self._hup_pending = False
        self._hup_task: asyncio.Task[None] | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._progress_dirty = False
        self._written_at = 0.0
        self._heartbeat: asyncio.TimerHandle | None = None
        self._lock_fd: int | None = None
        self._control: Any = None
        self._stopped = asyncio.Event()
        self._closed = False

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        """Take the runtime_dir, open the control socket, launch every stream."""
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        kill_orphans(self.snapshot_path)
        from .control import ControlServer  # aiohttp is only needed once running
        self._control = ControlServer(self, self.runtime_dir / snapshot.SOCKET_NAME)
        await self._control.start()
        for sid, scfg in self.cfg.streams.items():
            self.streams[sid] = Stream(scfg, self.host)
            self.streams[sid].start()
        self.status = "running"
        self._write()
        _settle_gc(full=True)
        self._beat()
        self.notifier.notify(READY=1, STATUS=self.status_line())
        log.info("started: %d streams (%d enabled), runtime_dir %s", len(self.streams),
                 sum(s.cfg.enabled for s in self.streams.values()), self.runtime_dir)

    async def close(self) -> None:
        """Stop every stream (TERM, then KILL after its stop_timeout); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.status = "stopping"
        self.notifier.notify(STOPPING=1, STATUS="stopping streams")
        self._write()
        async with self._reload_lock:  # let a reload finish applying, so no stream is missed
            await asyncio.gather(*(s.close() for s in self.streams.values()))
        if self._heartbeat:
            self._heartbeat.cancel()
        if self._flush_handle:
            self._flush_handle.cancel()
        if self._control:
            await self._control.close()
        self.status = "stopped"
        self._write()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        log.info("stopped: all streams")

    async def run(self) -> None:
        """Start, run until SIGTERM/SIGINT, then stop everything; SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopped.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        await self.start()
        if self._hup_pending:  # SIGHUP while starting: the file may have changed since we read it
            self._on_sighup()
        try:
            await self._stopped.wait()
        finally:
            await self.close()

    def stop(self) -> None:
        """Ask :meth:`run` to finish (what SIGTERM does)."""
        self._stopped.set()

    # -- reload --------------------------------------------------------------
    def _on_sighup(self) -> None:
        # A storm of SIGHUPs collapses into at most one more reload after the current one.
        self._hup_pending = True
        if self.status != "starting" and (self._hup_task is None or self._hup_task.done()):
            self._hup_task = asyncio.create_task(self._hup_reload())

    async def _hup_reload(self) -> None:
        while self._hup_pending and not self._closed:
            self._hup_pending = False
            try:
                await self.reload(wait=True)
            except config_mod.ConfigError:
                pass  # reported by reload(): log, snapshot
            except Exception:
                log.exception("reload failed")

    async def reload(self, *, wait: bool = False) -> ReloadPlan:
        """Re-read the config file and apply the difference.

        Raises :class:`config.ConfigError` (nothing changed) or
        :class:`ReloadInProgress` when ``wait`` is false and one is running.
        """
        if (self._reload_lock.locked() and not wait) or self._closed:
            raise ReloadInProgress("a reload is in progress" if not self._closed else "the agent is stopping")
        async with self._reload_lock:
            if self._closed:
                raise ReloadInProgress("the agent is stopping")
            self.notifier.notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
            try:
                return await self._reload()
            finally:
                self.notifier.notify(READY=1, STATUS=self.status_line())

    async def _reload(self) -> ReloadPlan:
        try:
            # Parsing a big file takes tens of ms: keep the event loop (and the streams) responsive.
            new = await asyncio.to_thread(config_mod.load, self.cfg.path, self.env)
        except config_mod.ConfigError as exc:
            self.last_reload = {"ok": False, "at": time.time(), "error": exc.errors}
            log.error("reload refused, nothing changed:\n%s", exc)
            self._write()
            raise
        plan = plan_reload(self.cfg, new)
        await self._apply(plan)
        self.last_reload = {"ok": True, "at": time.time(), "summary": plan.summary()}
        log.info("reloaded: %s", plan.summary())
        self._write()
        _settle_gc(full=False)
        return plan

    async def _apply(self, plan: ReloadPlan) -> None:
        new = plan.config
        if new.secrets != self.cfg.secrets:  # redaction of any stream's entry may change
            for stream in self.streams.values():
                stream.view_json = None
        self.cfg, self.needs_restart = new, plan.needs_restart
        self.host.ffmpeg, self.host.recordings_root, self.host.secrets = (
            new.node.ffmpeg, new.recordings_root, new.secrets)
        jobs = [self.streams.pop(sid).close() for sid in plan.remove]
        for sid in plan.start + plan.stop:
            if sid not in self.streams:
                self.streams[sid] = Stream(new.streams[sid], self.host)
        touched = plan.start + plan.restart + plan.stop + plan.update
        jobs += [self.streams[sid].apply(new.streams[sid], restart=sid in plan.restart) for sid in touched]
        await asyncio.gather(*jobs)

    async def restart_stream(self, sid: str) -> None:
        """Restart one stream now (reason ``manual``); KeyError if unknown."""
        await self.streams[sid].restart("manual")

    async def cleanup(self, sid: str | None, *, dry_run: bool) -> dict[str, dict[str, int]]:
        """Delete recordings older than each stream's retention now; per stream: files, bytes."""
        from .retention import cleanup_stream
        ids = [sid] if sid else list(self.cfg.streams)
        now, root, out = time.time(), self.cfg.recordings_root, {}
        for stream_id in ids:
            retention = self.cfg.streams[stream_id].recording.retention
            # File system work off the event loop: streams must not wait on a slow disk.
            doomed = await asyncio.to_thread(cleanup_stream, root, stream_id, now=now,
                                             max_age=retention, dry_run=dry_run)
            out[stream_id] = {"files": len(doomed), "bytes": sum(s.size for s in doomed)}
            if doomed and not dry_run:
                log.info("cleanup: %s: deleted %d segments (%d bytes) older than %gs",
                         stream_id, len(doomed), out[stream_id]["bytes"], retention)
        return out

    # -- snapshot & heartbeat ----------------------------------------------------
    def _changed(self, state_changed: bool) -> None:
        if not state_changed:
            self._progress_dirty = True
        elif self._flush_handle is None and self.status != "stopped":
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._write)

    def _write(self) -> None:
        if self._flush_handle:
            self._flush_handle.cancel()
            self._flush_handle = None
        snapshot.write_atomic(self.snapshot_path, self.view_json())
        self._written_at, self._progress_dirty = time.monotonic(), False

    def _beat(self) -> None:
        """Once a second: prove liveness (touch), flush progress now and then, pet the watchdog."""
        try:
            if self._progress_dirty and time.monotonic() - self._written_at >= PROGRESS_FLUSH_INTERVAL:
                self._write()
            else:
                snapshot.touch(self.snapshot_path)
        except FileNotFoundError:  # someone removed it: put it back
            self._write()
        except OSError as exc:
            log.error("cannot update snapshot %s: %s", self.snapshot_path, exc)
        if self.notifier.watchdog_interval:
            self.notifier.notify(WATCHDOG=1)
        interval = min(snapshot.HEARTBEAT_INTERVAL, self.notifier.watchdog_interval or 1e9)
        self._heartbeat = asyncio.get_running_loop().call_later(interval, self._beat)

    def view_json(self) -> str:
        """The snapshot as it is right now, as JSON text."""
        return snapshot_json(self)

    def status_line(self) -> str:
        """One line for systemd's STATUS=."""
        counts: dict[str, int] = {}
        for s in self.streams.values():
            counts[s.state.value] = counts.get(s.state.value, 0) + 1
        order = [st.value for st in StreamState]
        return ", ".join(f"{counts[k]} {k}" for k in order if k in counts) or "no streams"

    def _take_lock(self) -> None:
        path = self.runtime_dir / snapshot.LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(f"another vas-agent (pid {other}) is running with runtime_dir "
                                 f"{self.runtime_dir}; stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
