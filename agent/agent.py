"""The agent: owns the streams, the snapshot and the control socket; handles
signals, sd_notify and reloads.
"""
from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import gc
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from agent import snapshot
from agent.blocking import in_thread
from agent.config import model as config_mod
from agent.config.loader import load as load_config
from agent.interface import AlreadyRunning, ReloadFailed, ReloadInProgress
from agent.publisher import Publisher
from agent.redact import LOG_FILTER
from agent.reload import ReloadPlan, plan_reload
from agent.sdnotify import Notifier
from agent.supervise.limits import fd_warning, raise_nofile_limit
from agent.supervise.orphans import kill_orphans
from agent.supervise.states import StreamState
from agent.supervise.stream import Host, Stream
from agent.views import snapshot_json

log = logging.getLogger("vas.agent")
#: A reload whose file (or a ``${file:}`` secret) takes longer than this to read fails.
LOAD_TIMEOUT = 30.0


def _settle_gc() -> None:
    """Move what exists once the agent has started (modules, config, the streams) out of the
    collector's sight, once.

    With hundreds of streams a full collection walking every long-lived object pauses the
    event loop for tens of ms in the middle of respawns.  Frozen objects are still freed by
    reference counting, but a frozen reference cycle never is: so this runs once, at start
    (what dies of that set is bounded by it), never after a reload, which would lose every
    cycle alive at that moment for good (a blocking call's Future, an old config, an FFmpeg
    run's objects) each time.  Cyclic garbage already present would be kept too, so it is
    collected first.
    """
    gc.collect(2)
    gc.freeze()


class Agent:
    """Keeps every configured stream running.  ``start()``, then ``close()`` once done."""

    def __init__(self, cfg: config_mod.Config, *, env: dict[str, str] | None = None,
                 loader: Callable[..., config_mod.Config] = load_config) -> None:
        self.cfg = cfg
        self.env = env
        self._loader = loader  # load_config; tests pass one that blocks like a hung mount
        self.started_at = time.time()
        self.streams: dict[str, Stream] = {}
        self.status = "starting"
        self.last_reload: dict[str, Any] | None = None
        self.reload_warnings: list[str] = []  # the last reload's word on recordings: removed streams, floors
        self.needs_restart: tuple[str, ...] = ()
        self.notifier = Notifier(env)
        LOG_FILTER.secrets = cfg.secrets
        self.host = Host(ffmpeg=cfg.node.ffmpeg, recordings_root=cfg.recordings_root,
                         secrets=cfg.secrets, on_change=self._changed)
        self.runtime_dir = cfg.node.runtime_dir
        self.snapshot_path = self.runtime_dir / snapshot.SNAPSHOT_NAME
        self._reload_lock = asyncio.Lock()
        self._parsing: asyncio.Future[config_mod.Config] | None = None
        self._skip_drain = asyncio.Event()
        self._hup_pending = False
        self._hup_task: asyncio.Task[None] | None = None
        self.publisher = Publisher(self.snapshot_path, self.view_json, self.notifier,
                                   on_restored=self._runtime_dir_restored, intact=self._runtime_dir_intact)
        self._lock_fd: int | None = None
        self._control: Any = None
        self.sfu: Any = None        # SfuProcess when mediasoup: is configured
        self.producers: Any = None  # ProducerManager, likewise
        self.consumers: Any = None  # ConsumerTracker, likewise
        self._sfu_client: Any = None
        if cfg.mediasoup is not None:
            self._setup_sfu(cfg)
        self._stopped = asyncio.Event()
        self._closed = False
        self.retention: Any = None  # recordings.service.Retention once started
        self.fleet: Any = None  # fleet.node.Fleet when cluster: is configured (runs only the streams it owns)
        self.running: dict[str, int] | None = None  # fleet mode: stream -> epoch this node runs

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        """Take the runtime_dir, open the control socket, launch every stream."""
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        self._check_fd_limit(raise_limit=True)
        kill_orphans(self.snapshot_path)
        from agent.control import ControlServer  # aiohttp is only needed once running
        self._control = ControlServer(self, self.runtime_dir / snapshot.SOCKET_NAME)
        await self._control.start()
        await self._start_retention()
        if self.cfg.cluster is not None:
            self.running = {}  # nothing until etcd says this node owns it
        for sid, scfg in self._effective(self.cfg).streams.items():
            self.streams[sid] = Stream(scfg, self.host)
            self.streams[sid].start()
        if self.sfu is not None:
            self.sfu.start()
        if self.cfg.cluster is not None:
            self._start_fleet(self.cfg.cluster)
        self.status = "running"
        self.publisher.start()
        _settle_gc()
        self.notifier.notify(READY=1, STATUS=self.status_line())
        log.info("started: %d streams (%d enabled), runtime_dir %s", len(self.streams),
                 sum(s.cfg.enabled for s in self.streams.values()), self.runtime_dir)

    async def close(self, *, drain: bool = False) -> None:
        """Stop every stream (TERM, then KILL after its stop_timeout); safe to call twice.

        With ``drain``, first publish ``draining`` (not ready) for ``node.drain_period``.
        Nothing here may skip stopping the streams: a snapshot that cannot be
        written or a stream that fails to close does not spare the others.
        """
        if self._closed:
            return
        self._closed = True
        self.host.stopping = True  # from now on no stream starts a process
        if self._parsing is not None:
            self._parsing.cancel()  # a reload still reading its file is abandoned
        if drain:
            await self._drain()
        if self.fleet is not None:  # revoking the lease hands the streams over now; ours stop after
            await self.fleet.close()
        self.status = "stopping"
        self.notifier.notify(STOPPING=1, STATUS="stopping streams")
        self._write()
        if self.producers is not None:
            await self.producers.close()
            await self.consumers.close()
        async with self._reload_lock:  # let a reload finish applying, so no stream is missed
            results = await asyncio.gather(*(s.close() for s in self.streams.values()),
                                           return_exceptions=True)
        for sid, result in zip(list(self.streams), results):
            if isinstance(result, BaseException):
                log.error("stopping %s failed: %r", sid, result)
        if self.sfu is not None:  # after the streams: viewers keep their video to the end
            await self.sfu.close()
            await self._sfu_client.close()
        if self.retention is not None:
            await self.retention.close()
        self.publisher.close()
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
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        await self.start()
        if self._hup_pending:  # SIGHUP while starting: the file may have changed since we read it
            self._on_sighup()
        try:
            await self._stopped.wait()
        finally:
            await self.close(drain=True)

    def stop(self) -> None:
        """Ask :meth:`run` to finish (what SIGTERM does); asked twice, skip the drain."""
        if self._stopped.is_set():
            self._skip_drain.set()
        self._stopped.set()

    async def _drain(self) -> None:
        """Report not-ready for ``drain_period`` so load balancers move traffic first."""
        period = self.cfg.node.drain_period
        if period <= 0 or self._skip_drain.is_set():
            return
        self.status = "draining"
        self._write()
        self.notifier.notify(STATUS=f"draining: not ready; streams stop in {period:g}s")
        log.info("draining: not ready for %gs, then stopping streams (SIGTERM again: stop now)", period)
        try:
            await asyncio.wait_for(self._skip_drain.wait(), period)
        except TimeoutError:
            pass

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
            except (config_mod.ConfigError, ReloadFailed, ReloadInProgress):
                pass  # reported by reload(): log, snapshot
            except Exception:
                log.exception("reload failed")

    async def reload(self, *, wait: bool = False) -> ReloadPlan:
        """Re-read the config file and apply the difference.

        Raises :class:`~agent.config.model.ConfigError` (nothing changed),
        :class:`ReloadFailed` (any other failure, recorded in ``last_reload``) or
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
            new = await self._load()
        except config_mod.ConfigError as exc:
            self._reload_failed(exc.errors)
            log.error("reload refused, nothing changed:\n%s", exc)
            raise
        except (TimeoutError, OSError) as exc:
            reason = (f"reading {self.cfg.path} took longer than {LOAD_TIMEOUT:g}s (a hung file system "
                      "or secret file?)" if isinstance(exc, TimeoutError) else f"cannot load: {exc}")
            self._reload_failed([reason])
            log.error("reload failed, nothing changed: %s", reason)
            raise ReloadFailed(reason) from None
        if self._closed:  # SIGTERM came while the file was being read: start nothing
            raise ReloadInProgress("the agent is stopping")
        plan = plan_reload(self._effective(self.cfg), self._effective(new))
        self.reload_warnings = []
        try:
            await self._apply(plan, full=new)
        except Exception as exc:  # a bug; every stream still supervises itself
            log.exception("reload failed while applying: %s", plan.summary())
            self._reload_failed([f"internal error while applying: {exc!r}"])
            raise ReloadFailed(f"internal error while applying the new config: {exc!r}") from None
        self.last_reload = {"ok": True, "at": time.time(), "summary": plan.summary(),
                            "warnings": self.reload_warnings}
        log.info("reloaded: %s", plan.summary())
        for warning in self.reload_warnings:
            log.warning("reload: %s", warning)
        if self.fleet is not None:
            self.fleet.poke()  # new or removed streams, placement: the fleet decides who runs them
        self._write()
        return plan

    def _setup_sfu(self, cfg: config_mod.Config) -> None:
        assert cfg.mediasoup is not None
        from agent.sfu.client import SfuClient
        from agent.sfu.consumers import ConsumerTracker
        from agent.sfu.process import SfuProcess
        from agent.sfu.producers import ProducerManager
        from agent.supervise.h264_probe import ProfileCache
        self._sfu_client = client = SfuClient(cfg.mediasoup.api_url)
        profiles = ProfileCache(lambda: self.host.ffmpeg)
        self.producers = ProducerManager(client, lambda: self.streams, on_change=self._changed,
                                         fleet=self._producer_fleet, profile=lambda s: profiles.get(s.cfg),
                                         profile_check=lambda s: profiles.get(s.cfg, max_age=0))
        self.consumers = ConsumerTracker(client, cfg.consumers, on_change=self._changed)

        async def up() -> None:
            self.consumers.sfu_up()
            await self.producers.sfu_up()

        def down() -> None:
            self.producers.sfu_down()
            self.consumers.sfu_down()

        self.sfu = SfuProcess(cfg.mediasoup, client, secrets=cfg.secrets, on_up=up, on_down=down,
                              on_change=self._changed)
        self.host.sfu = True
        self.host.producer_due = self._producer_due
        self.host.source_port_taken = self.producers.replace
        self.host.rtp_spawned = self.producers.check_profile

    def _producer_due(self, stream_id: str) -> bool:
        """A stream's producer is on its way: the SFU is (re)starting, or up and making it."""
        return self.sfu.state in ("stopped", "starting") or self.producers.due(stream_id)

    async def _load(self) -> config_mod.Config:
        """Read and validate the file off the event loop; ``close()`` can abandon it."""
        # Parsing a big file takes tens of ms: keep the event loop (and the streams) responsive.
        # A daemon thread: a read stuck on a FIFO or hung mount must not block shutdown.
        self._parsing = asyncio.ensure_future(in_thread(
            lambda: self._loader(self.cfg.path, self.env), timeout=LOAD_TIMEOUT, name="vas-config"))
        try:
            return await self._parsing
        except asyncio.CancelledError:
            if self._closed and not self._cancelling():
                raise ReloadInProgress("the agent is stopping; reload abandoned") from None
            raise
        finally:
            self._parsing = None

    @staticmethod
    def _cancelling() -> bool:
        """True when the current task itself is being cancelled (not just the load)."""
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    def _reload_failed(self, errors: list[str]) -> None:
        self.last_reload = {"ok": False, "at": time.time(), "error": errors}
        self._write()

    def _effective(self, cfg: config_mod.Config) -> config_mod.Config:
        """``cfg`` with only the streams this node runs (all of them outside fleet mode)."""
        if self.running is None:
            return cfg
        return dataclasses.replace(cfg, streams={sid: s for sid, s in cfg.streams.items() if sid in self.running})

    def _producer_fleet(self) -> Any:
        """Fleet mode: whose SFU producers are whose (agent/sfu/plan.py); None outside it."""
        if self.cfg.cluster is None:
            return None
        from agent.sfu.plan import FleetView
        nodes = frozenset(self.fleet.nodes) if self.fleet is not None else frozenset()
        wanted = frozenset(sid for sid, s in self.cfg.streams.items() if s.enabled)
        # Before etcd first answered, cut off from it, or thawed from a freeze, no node can be told dead.
        known = self.fleet is not None and self.fleet.knows_who_lives()
        return FleetView(self.cfg.cluster.node_name, nodes, wanted, known)

    def _start_fleet(self, cluster: config_mod.ClusterConfig) -> None:
        from agent.fleet.node import Fleet

        def live(sid: str) -> bool:
            stream = self.streams.get(sid)
            return stream is not None and stream.state is StreamState.LIVE

        def pgids() -> list[int]:  # every child runs in its own session: its pid is its process group
            return [s.child.pid for s in self.streams.values() if s.child is not None]

        self.fleet = Fleet(cluster, lambda: self.cfg, apply=self.set_running, live=live,
                           ready=lambda: self.status == "running", on_change=lambda: self._changed(True),
                           pgids=pgids)
        self.host.may_spawn = self.fleet.may_spawn
        if self.fleet.fence is not None:
            self.host.spawned = self.fleet.fence.refresh
        self.fleet.start()

    async def set_running(self, running: dict[str, int]) -> None:
        """Fleet mode: run exactly ``running`` (stream -> epoch) of the configured streams."""
        async with self._reload_lock:
            if self._closed:
                return
            before = self._effective(self.cfg)
            self.running = dict(running)
            for sid, epoch in running.items():
                if sid in self.streams and epoch:
                    self.streams[sid].epoch = epoch  # names of its next segments; no restart for that
            plan = plan_reload(before, self._effective(self.cfg))
            await self._apply(plan, full=self.cfg)
            for sid, epoch in running.items():
                if sid in self.streams:
                    self.streams[sid].epoch = epoch
            if plan.start or plan.remove:
                log.info("fleet: running %d streams (started %s; stopped %s)", len(self.streams),
                         ", ".join(plan.start) or "none", ", ".join(plan.remove) or "none")

    async def _apply(self, plan: ReloadPlan, *, full: config_mod.Config) -> None:
        """Apply ``plan``; ``full`` is the whole new file (in fleet mode the plan only covers what runs here)."""
        new = dataclasses.replace(plan.config, streams=full.streams)
        if new.secrets != self.cfg.secrets:  # redaction of any stream's entry may change
            for stream in self.streams.values():
                stream.view_json = None
        self.cfg, self.needs_restart = new, plan.needs_restart
        LOG_FILTER.secrets = new.secrets
        self.host.ffmpeg, self.host.recordings_root, self.host.secrets = (
            new.node.ffmpeg, new.recordings_root, new.secrets)
        if self.retention is not None:  # policies change in place; FFmpeg is not restarted
            self.reload_warnings = self.retention.update(new)
        jobs = [self.streams.pop(sid).close() for sid in plan.remove]
        for sid in plan.start + plan.stop:
            if sid not in self.streams:
                self.streams[sid] = Stream(new.streams[sid], self.host)
                self.streams[sid].epoch = (self.running or {}).get(sid, 0)  # fleet: names its first segments
        touched = plan.start + plan.restart + plan.stop + plan.update
        jobs += [self.streams[sid].apply(new.streams[sid], restart=sid in plan.restart) for sid in touched]
        if self.producers is not None and plan.start:
            jobs.append(self.producers.reconcile())  # alongside: a new stream's first spawn waits for its producer
        self._check_fd_limit(raise_limit=False)
        # Every job runs to its end even if one fails: no stream is left half-applied.
        results = await asyncio.gather(*jobs, return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed
        if self.producers is not None:  # new streams get producers, removed ones lose theirs
            self.consumers.cfg = new.consumers
            await self.producers.reconcile()

    async def consumer_heartbeat(self, consumer_id: str) -> bool:
        """A viewer's heartbeat; False when the SFU has no such consumer (or no SFU is configured)."""
        return self.consumers is not None and await self.consumers.heartbeat(consumer_id)

    async def close_consumer(self, stream_id: str, consumer_id: str) -> bool:
        """Force-close one consumer of ``stream_id`` (reason ``admin``); False when unknown."""
        if self.consumers is None:
            return False
        session = self.consumers.sessions.get(consumer_id)
        if session is None:
            await self.consumers.refresh()
            session = self.consumers.sessions.get(consumer_id)
        if session is None or session.stream_id != stream_id:
            return False
        return await self.consumers.close_consumer(consumer_id, "admin")

    async def restart_stream(self, sid: str) -> None:
        """Restart one stream now (reason ``manual``); KeyError if unknown."""
        await self.streams[sid].restart("manual")

    async def cleanup(self, sid: str | None, *, dry_run: bool,
                      retention_days: float | None = None) -> dict[str, Any]:
        """Delete recordings older than each stream's retention (or ``retention_days``) now.

        The VAS-MS-V2 health API's result shape per stream (``stream_id``, ``retention_days``,
        ``deleted_count``, ``deleted_size_mb``, ``cutoff_time``), plus totals.
        """
        from agent.recordings.report import cleanup_result
        now = time.time()
        outcomes = await self.retention.cleanup(sid, retention_days=retention_days, dry_run=dry_run)
        return cleanup_result(outcomes, now=now, dry_run=dry_run, retention_days=retention_days)

    async def _start_retention(self) -> None:
        """Index the recordings root (in the background) and enforce retention from then on."""
        from agent.recordings.service import Retention

        def running(sid: str) -> bool:
            stream = self.streams.get(sid)
            return stream is not None and stream.child is not None

        def changed(sid: str) -> None:
            stream = self.streams.get(sid)
            if stream is not None:
                stream.view_json = None
            self.publisher.changed(False)  # figures: flushed with progress, not at once

        self.retention = Retention(self.cfg, is_running=running, on_change=changed)
        await self.retention.start()

    # -- snapshot & heartbeat ----------------------------------------------------
    def _changed(self, state_changed: bool) -> None:
        self.publisher.changed(state_changed)

    def _write(self) -> bool:
        return self.publisher.write()

    def _runtime_dir_intact(self) -> bool:
        """The lock file and the socket are still there (by name: recreated by another agent that
        took the lock in the meantime, they are its own and left alone)."""
        return ((self._lock_fd is None or (self.runtime_dir / snapshot.LOCK_NAME).exists())
                and (self._control is None or (self.runtime_dir / snapshot.SOCKET_NAME).exists()))

    def _runtime_dir_restored(self) -> None:
        """The runtime_dir was recreated: take the lock again and listen on the socket again."""
        if not (self.runtime_dir / snapshot.LOCK_NAME).exists():
            old = self._lock_fd
            try:
                self._take_lock()
            except AlreadyRunning as exc:
                log.error("%s", exc)
                return  # its socket is its own
            else:
                if old is not None:
                    os.close(old)
        if self._control is not None:
            asyncio.get_running_loop().create_task(self._control.rebind())

    def _check_fd_limit(self, *, raise_limit: bool) -> None:
        import resource
        soft = raise_nofile_limit()[0] if raise_limit else resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        warning = fd_warning(sum(s.enabled for s in self.cfg.streams.values()), soft)
        if warning:
            log.warning("%s", warning)

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

