"""Retention inside the agent: keeps the index current and runs the policies.

* **age**: a timer set for when the oldest segment expires (not a poll of every stream);
* **size**: a stream above ``recording.max_size`` loses its oldest segments;
* **disk**: below ``recordings.min_free``, the oldest segments of all streams go until
  free space reaches the floor plus ``min_free_hysteresis`` (statvfs every TICK seconds);
* **orphan**: directories of streams no longer configured, after ``orphan_retention``;
* **manual**: ``vasctl cleanup`` / the control route.

Every pass holds one asyncio lock (passes, manual cleanups and rescans never
overlap) and does its file system work on an ``agent.blocking`` daemon thread: a call
stuck on a hung mount can neither hold up the agent's start (retention comes up in
the background) nor its exit (``close`` gives up on it; nothing joins the thread).
Stream folders that do not answer are left out (agent/recordings/hung.py).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from agent.blocking import in_thread, pool
from agent.config.model import Config
from agent.recordings import memory as memory
from agent.recordings.delete import FUTURE_AHEAD, Candidate, Outcome, UnsafeDirectory, delete_segments
from agent.recordings.disk import Filesystem, floor_problem, measure_below
from agent.recordings.hung import (
    PROBE_TIMEOUT,
    START_PATIENCE,
    Answering,
    problem_text,
    stuck_after,
    stuck_text,
)
from agent.recordings.index import SegmentIndex
from agent.recordings.inits import Playlists, hold_inits_below
from agent.recordings.memory import orphan_max_age
from agent.recordings.plans import plan_disk, plan_stream
from agent.recordings.pressure import Pressure
from agent.recordings.verify import Verifier
from agent.recordings.wallclock import ClockSteps
from agent.recordings.watch import Watch

log = logging.getLogger("vas.retention")
#: statvfs, pending snapshot updates and overflow checks run this often.
TICK = 2.0
#: Age passes run at most this often: segments of a few seconds expire in batches.
AGE_BATCH = 10.0
#: A floor pass that found nothing it may take is retried after this long (or at once in an emergency).
PRESSURE_RETRY = 60.0
#: Threads deleting at once (one stream each).
DELETE_THREADS = 8
#: Segments a pass deletes at least before it is spread over DELETE_THREADS.
PARALLEL_DELETE_MIN = 64
#: At stop, a pass in progress gets this long to finish before it is given up (stuck on a hung mount).
CLOSE_PATIENCE = 3.0
#: At stop, the inotify watch gets this long to stop (watchdog's threads join within OBSERVER_TIMEOUT).
WATCH_STOP_TIMEOUT = 8.0
#: Folders read at once when their identities are read one by one (a folder hangs).
FOLLOW_FANOUT = 8
#: A manual cleanup waits this long for the index and for a pass in progress, then answers it is busy.
CLEANUP_PATIENCE = 20.0
#: Why a pass did not run: a folder moved aside would be planned as a stranger's (orphan_retention).
FOLLOW_UNKNOWN = ("the stream folders' identities could not be read (a hung mount?): no pass runs until they "
                  "are (a folder moved aside would lose its stream's retention)")
T = TypeVar("T")


def fans_out(streams: int, segments: int) -> bool:
    """Whether a pass deleting ``segments`` of ``streams`` streams is spread over DELETE_THREADS.
    Only a big one is: a full disk's floor in its steady state deletes a few segments of a few
    streams as each new one lands, and spread over 8 threads every time they filled each
    thread's malloc cache (glibc keeps one per thread) for a gain of microseconds."""
    return streams > 1 and segments >= PARALLEL_DELETE_MIN


class Retention:
    """Retention for the whole recordings root.  ``start()``, then ``close()``."""

    def __init__(self, cfg: Config, *, is_running: Callable[[str], bool],
                 on_change: Callable[[str], None]) -> None:
        self.cfg, self.root = cfg, cfg.recordings_root
        self._is_running, self._on_change = is_running, on_change
        self.index = SegmentIndex(self.root)
        self.ready = asyncio.Event()
        self.deleted: dict[str, dict[str, list[int]]] = {}  # stream -> reason -> [segments, bytes]
        self.errors = 0
        self.filesystem: dict[str, Any] | None = None
        self._lock = asyncio.Lock()
        self._watch: Watch | None = None
        self._tasks: set[asyncio.Task] = set()
        self._tick_handle: asyncio.TimerHandle | None = None
        self._age_handle: asyncio.TimerHandle | None = None
        self._last_age = 0.0
        self._next_sweep = time.monotonic() + cfg.recordings.sweep_interval
        self._pressure_idle_until = 0.0
        self._verifier = Verifier()  # size and floor decisions rest on files that exist
        self._playlists = Playlists()  # where fMP4 init files are named (EXT-X-MAP)
        self.remembered: dict[str, float] = {}  # stream -> last known retention (orphans keep it)
        self.folders: dict[str, tuple[int, int]] = {}  # stream -> its folder's (st_dev, st_ino)
        self._ahead_told: set[str] = set()  # streams whose future-dated segments were logged
        self._cap_left: dict[str, int] = {}  # capped stream -> its total when the last pass ended
        self.pressure = Pressure(str(self.root))  # free-space passes: warnings, counts, unreachable floors
        self._closed = False
        self.failed: str | None = None
        self.clock = ClockSteps()  # ages stay true across wall-clock steps
        self.unsafe: dict[str, str] = {}  # root entries retention refuses (symlinks): name -> reason
        self.answering = Answering(self.root)  # stream folders that do not answer (a hung mount): left out
        self._coming_up: asyncio.Future | None = None
        self._patience: asyncio.TimerHandle | None = None
        self._rechecking = False
        self._next_probe = time.monotonic() + self.cfg.recordings.probe_interval
        self._calls: dict[object, tuple[str, float]] = {}  # retention's calls in threads: what, since
        self._problem_said: str | None = None
        self._unfollowed = False  # the last pass could not read the folders' identities (said once)

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        """Come up in the background (watch, then index): streams start meanwhile, and a hung
        mount under the root holds up neither the agent's start nor its first snapshot."""
        # The inotify instance now (no file system access): its queue size is the one set at start.
        watch = Watch(self.root, self.index, skip=self._left_out)
        self._coming_up = asyncio.ensure_future(self._come_up(watch))
        self._patience = asyncio.get_running_loop().call_later(START_PATIENCE, self._impatient)

    async def _come_up(self, watch: Watch) -> None:
        try:
            await self.answering.find()  # stream folders that do not answer are left out of the walk
            await self._io(partial(self.root.mkdir, parents=True, exist_ok=True), "mkdir")
            await self._io(watch.start, "watch")  # adding watches walks the directories
        except OSError as exc:  # recording may still work later; retention says why it cannot
            self.failed = f"cannot watch recordings root {self.root}: {exc.strerror or exc}"
            log.error("retention disabled: %s", self.failed)
            self._on_change("")
            return
        self._watch = watch
        self.answering.watching()
        self._spawn(self._rescan("start"))
        self._tick_handle = asyncio.get_running_loop().call_later(TICK, self._tick)
        self._on_change("")

    def _left_out(self, name: str) -> bool:
        return name in self.answering.hung  # read on watchdog's threads: a set lookup, no lock needed

    def _impatient(self) -> None:
        if self._watch is None and not self.failed:
            self._spawn(self._say_waiting())

    async def _say_waiting(self) -> None:
        await self.answering.find()  # does the root itself answer?  (which folders do not)
        if self._watch is None and not self.failed:
            self.answering.impatient(START_PATIENCE)
            self._on_change("")

    async def _io(self, fn: Callable[[], T], what: str, key: str | None = None) -> T:
        """``fn()`` on a daemon thread named ``retention:{what}`` (a stuck one says what it was doing)."""
        token = object()
        self._calls[token] = (f"retention:{what}", time.monotonic())
        try:
            return await in_thread(fn, timeout=None, name=f"retention:{what}", key=key)
        finally:
            del self._calls[token]

    async def close(self) -> None:
        """Stop watching and timers; a pass in progress gets CLOSE_PATIENCE to finish.  Safe twice."""
        if self._closed:
            return
        self._closed = True
        for handle in (self._tick_handle, self._age_handle, self._patience):
            if handle is not None:
                handle.cancel()
        if self._coming_up is not None:
            self._coming_up.cancel()  # a watch still starting (stuck on the root) is left to its thread
        held = False
        try:
            await asyncio.wait_for(self._lock.acquire(), CLOSE_PATIENCE)
            held = True
        except TimeoutError:
            # A pass stuck on a hung mount is given up; its thread dies with the process.  Safe: it
            # deletes one planned file at a time, each checked again right before its unlink, and the
            # next start's pass plans what it left.
            log.warning("retention: a pass is still running after %gs (stuck on a hung mount?): not waiting "
                        "for it", CLOSE_PATIENCE)
        for task in list(self._tasks):
            task.cancel()  # passes waiting for the lock (or stuck) do not run after close
        try:
            if self._watch is not None:
                await in_thread(self._watch.stop, timeout=WATCH_STOP_TIMEOUT, name="retention:watch-stop")
        except TimeoutError:
            log.warning("retention: the inotify watch did not stop within %gs (a hung mount?): left behind",
                        WATCH_STOP_TIMEOUT)
        finally:
            if held:
                self._lock.release()

    def update(self, cfg: Config) -> list[str]:
        """A reload: new policies apply in place (a new root needs an agent restart).

        Returns what the operator should hear: removed streams' recordings, unreachable floors.
        """
        if cfg.recordings_root != self.root:
            log.warning("recordings.root changed to %s: retention keeps watching %s until the agent restarts",
                        cfg.recordings_root, self.root)
            cfg = dataclasses.replace(cfg, recordings_root=self.root)
        old, self.cfg = self.cfg, cfg
        # A shorter interval applies now, not after the old one has run out (1h -> 30s: 30 s, not 1h).
        now = time.monotonic()
        self._next_probe = min(self._next_probe, now + cfg.recordings.probe_interval)
        self._next_sweep = min(self._next_sweep, now + cfg.recordings.sweep_interval)
        # No file system access here, on the event loop: a stream folder that hung since the last
        # probe would freeze the agent (supervision, heartbeat, control socket) in a stat.  The
        # folders' identities are read by _save_memory, on a bounded thread (_follow).
        self.remembered = memory.merged({**self.remembered, **memory.merged({}, old)}, cfg)
        self._spawn(self._save_memory())
        notes = memory.removed_notes(old, cfg, self.index, self.remembered)
        notes += [p for fs in self.pressure.filesystems
                  if (p := floor_problem(cfg.recordings, fs.total, fs.path, fs.usable)) is not None]
        self._schedule_age(0.0)
        self._spawn(self._check_unsafe(announce_all=True))
        self._spawn(self.enforce())
        return notes

    async def _save_memory(self) -> None:
        """After a reload: the folders followed (a removed stream's identity remembered), then saved."""
        async with self._lock:  # one writer of the file at a time
            await self._follow()
            await self._io(self._save_now, "memory")

    def _save_now(self) -> None:
        memory.save(self.root, dict(self.remembered), {k: v for k, v in self.folders.items() if k in self.remembered})

    async def _follow(self) -> bool | None:
        """Folders moved aside keep their stream's retention (memory.follow): True when the memory
        changed; None when an indexed folder's identity could not be read (see FOLLOW_UNKNOWN).

        The stats run on a thread given up after PROBE_TIMEOUT.  When it does not return, each
        folder is read on its own (a key each: one stuck is not repeated and holds up no other); one
        that does not answer is probed and leaves the index (it hung since the last probe); only if
        it is still indexed then is the answer None.  The threads return nothing but identities:
        one stuck for good changes no state here."""
        with self.index.lock:
            on_disk = list(self.index.streams)
        found = await self._identities(on_disk)
        silent = {sid for sid, ident in found.items() if ident is False}
        if silent:
            await self._find_hung()
            with self.index.lock:
                if silent & set(self.index.streams):
                    return None
        current = {sid: ident for sid, ident in found.items() if isinstance(ident, tuple)}
        self.remembered, self.folders, changed = memory.follow(self.root, self.remembered, self.folders,
                                                               set(self.cfg.streams), current)
        return changed

    async def _identities(self, on_disk: list[str]) -> dict[str, tuple[int, int] | None | bool]:
        """Each folder's memory.identity (None: not a directory), bounded; False: it does not answer.
        One call on one thread; only when it does not return (a hang), one per folder."""
        try:
            current = await in_thread(partial(memory.identities, self.root, on_disk), timeout=PROBE_TIMEOUT,
                                      name="retention:folders", key="retention:folders")
            return {sid: current.get(sid) for sid in on_disk}
        except TimeoutError:
            pass  # a folder does not answer (or an earlier call is still stuck on one)
        room = asyncio.Semaphore(FOLLOW_FANOUT)  # thousands of folders must not fill the workers' queue

        async def one(sid: str) -> tuple[int, int] | None | bool:
            path = self.root / sid
            async with room:
                try:
                    return await self.answering.probe(partial(memory.identity, path), path)
                except TimeoutError:
                    return False
        return dict(zip(on_disk, await asyncio.gather(*(one(sid) for sid in on_disk))))

    # -- passes -------------------------------------------------------------------
    async def _rescan(self, why: str) -> None:
        if why != "start":  # (start probed just before) a folder that hangs since is left out from now
            await self._find_hung()
        async with self._lock:
            started = time.monotonic()
            await self._io(partial(self.index.scan_all, frozenset(self.answering.hung)), "scan")
            if why == "start":
                with self.index.lock:
                    on_disk = list(self.index.streams)
                loaded = await self._io(partial(memory.load, self.root), "memory")
                # A reload during the scan already put newer entries in memory: they win over the file.
                self.remembered = {**memory.keep_unknown(loaded, loaded.streams, on_disk), **self.remembered}
                self.folders = {**loaded.folders, **self.folders}
                await self._follow()
                self.remembered = memory.merged(self.remembered, self.cfg)
                await self._io(self._save_now, "memory")
            n = sum(self.index.stats(sid)[0] for sid in list(self.index.streams))
            log.info("recordings indexed (%s): %d segments in %.2fs", why, n, time.monotonic() - started)
            await self._check_unsafe(announce_all=why == "start")
            self.ready.set()
            for sid in list(self.index.streams) + list(self.cfg.streams):
                self._on_change(sid)
        await self.enforce()

    async def _check_unsafe(self, *, announce_all: bool) -> None:
        """Find the root's symlinks again; log every one (start, reload) or the new ones (sweeps)."""
        from agent.recordings.unsafe import announce, find_unsafe
        with self.index.lock:
            nested = {sid: list(links) for sid, links in self.index.links.items() if links}
        configured = [sid for sid in self.cfg.streams if sid not in self.answering.hung]  # an lstat each
        found = await self._io(partial(find_unsafe, self.root, configured, nested), "unsafe")
        fresh = found if announce_all else {k: v for k, v in found.items() if self.unsafe.get(k) != v}
        announce(self.root, fresh, self.cfg.streams)
        changed = set(found.items()) ^ set(self.unsafe.items())
        self.unsafe = found
        for name in {name for name, _ in changed}:
            self._on_change(name)

    async def enforce(self) -> None:
        """Run every policy now (age, orphan, size, then the free-space floor per filesystem)."""
        await self.ready.wait()
        async with self._lock:
            followed = await self._follow()
            if followed is None:
                self._last_age = time.monotonic()  # tried again in AGE_BATCH, not at once
                if not self._unfollowed:  # once, not every AGE_BATCH
                    log.warning("retention: %s", FOLLOW_UNKNOWN)
                self._unfollowed = True
                self._schedule_age(time.time())
                return
            self._unfollowed = False
            if followed:
                await self._io(self._save_now, "memory")
            self.clock.check()
            now = time.time()
            plans, pressure = await self._io(partial(self._plan_all, now), "plan")
            merged: dict[str, list[Candidate]] = {}  # one run per reason: streams delete in parallel
            for reason, doomed in plans:
                merged.setdefault(reason, []).extend(doomed)
            for reason, doomed in merged.items():
                await self._io(partial(self._execute, doomed, reason, now), f"delete:{reason}")
            freed = False
            for fs, doomed in pressure:
                outcome = await self._io(partial(self._execute, doomed, "disk", now), "delete:disk")
                self.pressure.record(fs, outcome)
                freed = freed or bool(outcome.deleted)
            if pressure and not freed:  # below a floor with nothing it may take: look again later, not every tick
                self._pressure_idle_until = time.monotonic() + PRESSURE_RETRY
            with self.index.lock:
                self.index.timing.prune(self.index.lowest_number)  # the runs and numbers no segment holds any more
            self._last_age = time.monotonic()
            self._schedule_age(now)
            self._report_ahead(now)
            self._cap_left = {sid: self.index.stats(sid)[1] for sid, s in self.cfg.streams.items()
                              if s.recording.max_size > 0}

    def _report_ahead(self, now: float) -> None:
        """A WARNING once per stream that holds segments dated in the future (no policy takes them)."""
        from agent.recordings.report import report_ahead
        report_ahead(self.index, now, self._ahead_told)

    def _plan_all(self, now: float) -> tuple[list[tuple[str, list[Candidate]]], list[tuple[Filesystem, list]]]:
        fss = self._statvfs()
        with self.index.lock:
            plans = plan_stream(self.index, self.cfg, now, self._is_running, self.clock.shift, self.remembered)
        plans = self._verified(plans, now, fss)
        pressure: list[tuple[Filesystem, list[Candidate]]] = []
        with self.index.lock:
            for fs in fss:
                if fs.free < fs.floor:
                    planned = [c for _, d in plans for c in d] + [c for _, d in pressure for c in d]
                    pressure.append((fs, plan_disk(self.index, fs, now, self._is_running, planned=planned,
                                                   shift=self.clock.shift)))
        self._hold_inits([d for _, d in plans] + [d for _, d in pressure])
        return plans, pressure

    def _hold_inits(self, plans: list[list[Candidate]]) -> None:
        """fMP4 init files stay while segments that need them stay (agent/recordings/inits.py)."""
        hold_inits_below(self.root, self.index, plans, self._playlists)

    def _verified(self, plans: list[tuple[str, list[Candidate]]], now: float,
                  fss: list[Filesystem]) -> list[tuple[str, list[Candidate]]]:
        """The plans again once the index holds only files that still exist, when a size cap
        or the floor is about to act on its totals (agent/recordings/verify.py)."""
        with self.index.lock:
            every = set(self.index.streams)
        pressed = any(fs.free < fs.floor for fs in fss)
        sids = every if pressed else {c.stream for r, d in plans if r == "size" for c in d}
        if not sids:
            return plans
        dropped = self._verifier.verify_below(self.root, self.index, sorted(sids))
        if not dropped:
            return plans
        log.info("recordings: %d indexed segments no longer exist (removed or moved away); "
                 "sizes recounted before deciding", dropped)
        for sid in sids:
            self._on_change(sid)
        with self.index.lock:
            return plan_stream(self.index, self.cfg, now, self._is_running, self.clock.shift, self.remembered)

    def _execute(self, doomed: list[Candidate], reason: str, now: float) -> Outcome:
        if not doomed:
            return Outcome()
        outcome = self._delete_parallel(doomed, now)
        self.index.forget(outcome.deleted + outcome.gone)
        for c in outcome.changed:  # no inotify event says so (IN_ATTRIB is not watched)
            self.index.upsert(c.stream, c.dir, c.name, c.mtime, c.size)
        self.errors += outcome.errors
        for c in outcome.deleted:
            counts = self.deleted.setdefault(c.stream, {}).setdefault(reason, [0, 0])
            counts[0] += 1
            counts[1] += c.size
        for sid in {c.stream for c in outcome.deleted + outcome.gone}:
            self._on_change(sid)
        if outcome.deleted:
            log.info("retention (%s): deleted %d segments (%d bytes) of %s", reason, len(outcome.deleted),
                     outcome.bytes, ", ".join(sorted({c.stream for c in outcome.deleted})))
        return outcome

    def _delete_parallel(self, doomed: list[Candidate], now: float) -> Outcome:
        """Streams' files deleted by several threads (see :func:`fans_out`): unlink mostly waits
        on the disk (inode and bitmap blocks when cold), and those waits overlap.  Each stream's
        own files still go oldest first."""
        groups: dict[str, list[Candidate]] = {}
        for c in doomed:
            groups.setdefault(c.stream, []).append(c)
        if not fans_out(len(groups), len(doomed)):
            return delete_segments(self.root, doomed, now=now, shift=self.clock.shift)
        parts = list(pool("vas-delete", DELETE_THREADS).map(
            lambda g: delete_segments(self.root, g, now=now, shift=self.clock.shift), groups.values()))
        return Outcome(deleted=[c for p in parts for c in p.deleted], gone=[c for p in parts for c in p.gone],
                       changed=[c for p in parts for c in p.changed],
                       errors=sum(p.errors for p in parts))

    # -- timers -------------------------------------------------------------------
    def _schedule_age(self, now: float) -> None:
        """Arm the age timer for the moment the oldest segment of any stream expires."""
        if self._closed:
            return
        if self._age_handle is not None:
            self._age_handle.cancel()
        due = self._next_expiry()
        if due is None:
            return
        delay = max(due - time.time(), AGE_BATCH - (time.monotonic() - self._last_age), 0.0)
        self._age_handle = asyncio.get_running_loop().call_later(min(delay, 86400.0),
                                                                 lambda: self._spawn(self.enforce()))

    def _next_expiry(self) -> float | None:
        due = None
        for sid in list(self.index.streams):
            cfg = self.cfg.streams.get(sid)
            keep = (cfg.recording.retention if cfg is not None
                    else orphan_max_age(self.remembered.get(sid), self.cfg.recordings.orphan_retention))
            oldest = self.index.stats(sid)[2]
            if keep > 0 and oldest is not None:
                expires = self.clock.shift(oldest) + keep
                due = expires if due is None else min(due, expires)
        return due

    def _tick(self) -> None:
        if self._closed:
            return
        self._tick_handle = asyncio.get_running_loop().call_later(TICK, self._tick)
        self._spawn(self._check())
        if self.answering.hung and not self._rechecking:
            self._spawn(self._recheck())
        if self._problem() != self._problem_said:  # e.g. a call stuck past STUCK_AFTER: the snapshot says so
            self._problem_said = self._problem()
            self._on_change("")
        if time.monotonic() >= self._next_probe:  # while a pass runs too: it may be the one stuck
            self._next_probe = time.monotonic() + self.cfg.recordings.probe_interval
            self._spawn(self._find_hung())

    async def _find_hung(self) -> None:
        """Folders that stopped answering since they were indexed leave the index (no pass plans there)."""
        for sid in await self.answering.find():
            self.index.discard_tree(sid, "")
            self._on_change(sid)

    async def _recheck(self) -> None:
        """Folders left out that answer again are taken back, each on its own (one that hangs again
        at once holds only its own task)."""
        self._rechecking = True
        try:
            back = await self.answering.recheck()
        finally:
            self._rechecking = False
        for sid in sorted(back):
            self._spawn(self._take_back(sid))

    async def _take_back(self, sid: str) -> None:
        """Watch, index and enforce a folder that answers again, as the others."""
        if self._watch is not None:
            await self._io(partial(self._watch.add, sid), f"watch:{sid}")
        async with self._lock:
            await self._io(partial(self.index.scan_stream, sid), f"scan:{sid}")
        self._on_change(sid)
        await self.enforce()

    async def _check(self) -> None:
        if self._lock.locked() or not self.ready.is_set():
            return  # a pass is running: it looks at the disk itself
        if self._watch is not None and self._watch.take_overflow():
            log.warning("recordings: inotify queue overflowed; rescanning the whole root")
            await self._rescan("inotify overflow")
            return
        for sid in self._watch.take_rescans() if self._watch else ():
            if sid in self.answering.hung:
                continue  # left out: scanned when it answers again (_take_back)
            async with self._lock:
                await self._io(partial(self.index.scan_stream, sid), f"scan:{sid}")
        for sid in self._watch.take_changed() if self._watch else ():
            self._on_change(sid)
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.cfg.recordings.sweep_interval
            await self._rescan("sweep")
            return
        try:  # bounded: a folder that hangs since it was indexed would hold a thread per tick
            # The key: one stuck on a hung root (every tick) holds one thread, not a new one each 2 s.
            fss = await in_thread(self._statvfs, timeout=PROBE_TIMEOUT, name="retention:statvfs",
                                  key="retention:statvfs")
        except TimeoutError:
            self._spawn(self._find_hung())
            return
        pressed = [fs for fs in fss if fs.free < fs.floor]
        if self._over_cap() or any(fs.emergency for fs in pressed) or \
                (pressed and time.monotonic() >= self._pressure_idle_until):
            await self.enforce()

    def _over_cap(self) -> bool:
        """A stream's recordings grew past its ``max_size`` (from the index's totals)."""
        after = time.time() + FUTURE_AHEAD  # future-dated segments are not counted (nothing may take them)
        for sid, scfg in self.cfg.streams.items():
            if scfg.recording.max_size <= 0:
                continue
            with self.index.lock:
                ahead = self.index.ahead(sid, after)[1]
            total = self.index.stats(sid)[1]
            # Over its cap at the total the last pass left (a held fMP4 init, the live file): no
            # pass can change that until the total does.
            if total - ahead > scfg.recording.max_size and total != self._cap_left.get(sid):
                return True
        return False

    def _statvfs(self) -> list[Filesystem]:
        """Every filesystem holding the root or segments (blocking)."""
        fss = measure_below(self.root, self.cfg.recordings, self.index.devices())
        if fss:  # the root's own comes first
            self.filesystem = fss[0].legacy_view()
        self.pressure.filesystems = fss
        self.pressure.check_floors(self.cfg.recordings)
        return fss

    def _spawn(self, coro: Any) -> None:
        if self._closed:
            coro.close()
            return
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("retention pass failed: %r", task.exception(), exc_info=task.exception())

    # -- on demand and reports ------------------------------------------------------
    async def cleanup(self, sid: str | None, *, retention_days: float | None, dry_run: bool) -> dict[str, Any]:
        """Apply age retention now (reason ``manual``); per stream: deleted segments and errors."""
        from agent.config.cleanup import check_days
        from agent.recordings.plans import plan_manual
        if retention_days is not None:
            check_days(retention_days)  # every caller checks; this is the last line before deleting
        self._refuse_while_hung(sid)
        if sid is not None:
            await self._check_folder(sid)
        await self._patiently(self.ready.wait(), "is still indexing the recordings root")
        await self._patiently(self._lock.acquire(), "has a pass running")
        try:
            if await self._follow() is None:  # also finds a folder hung since the last probe
                raise UnsafeDirectory(f"{FOLLOW_UNKNOWN}; nothing deleted")
            self._refuse_while_hung(sid)
            self.clock.check()
            now = time.time()
            ids = [sid] if sid else list(self.cfg.streams)
            with self.index.lock:
                plans = plan_manual(self.index, self.cfg, ids, now, self._is_running, retention_days,
                                    self.clock.shift)
            await self._io(partial(self._hold_inits, [d for _, d in plans.values()]), "inits")
            out = {}
            for stream_id, (max_age, doomed) in plans.items():
                outcome = (Outcome(deleted=doomed) if dry_run
                           else await self._io(partial(self._execute, doomed, "manual", now), "delete:manual"))
                out[stream_id] = (max_age, outcome)
            return out
        finally:
            self._lock.release()

    def _refuse_while_hung(self, sid: str | None) -> None:
        """UnsafeDirectory when the cleanup would meet what does not answer: the root, or (for every
        stream) a folder left out, whose footage no plan may see; a result of zeros would hide it."""
        if sid is not None and sid in self.answering.hung:
            raise self._not_answering(sid)
        every = sid is None and self.answering.hung
        if self.failed or self.answering.waiting or not self.answering.root_answers or every:
            said = self._problem() or ""
            tail = "; clean the other streams one by one (vasctl cleanup ID)" if every and not self.failed else ""
            raise UnsafeDirectory(f"{said}; nothing deleted{tail}")

    async def _patiently(self, waited: Any, what: str) -> None:
        """Wait CLEANUP_PATIENCE for ``waited`` (a pass stuck on a hung mount may never end), then refuse."""
        try:
            await asyncio.wait_for(waited, CLEANUP_PATIENCE)
        except TimeoutError:
            said = self._problem()
            raise UnsafeDirectory(f"retention {what} for more than {CLEANUP_PATIENCE:g}s"
                                  f"{f' ({said})' if said else ''}; nothing deleted, try again later") from None

    def _not_answering(self, sid: str) -> UnsafeDirectory:
        return UnsafeDirectory(f"{self.root / sid}: not answering (a hung mount?); nothing deleted")

    async def _check_folder(self, sid: str) -> None:
        """UnsafeDirectory when the stream's folder (not known hung: _refuse_while_hung) does not
        answer now or is not a plain directory."""
        try:
            unsafe = await self.answering.probe(partial(self._unsafe, sid), self.root / sid)
        except TimeoutError:
            raise self._not_answering(sid) from None
        if unsafe:
            raise UnsafeDirectory(f"{self.root / sid}: not a plain directory; nothing deleted")

    def _unsafe(self, sid: str) -> bool:
        """The stream's directory exists but is a symlink or not a directory."""
        import stat
        try:
            return not stat.S_ISDIR(os.lstat(self.root / sid).st_mode)
        except FileNotFoundError:
            return False
        except OSError:
            return True

    def stream_view(self, sid: str) -> dict[str, Any]:
        """The snapshot's per-stream recording figures."""
        count, size, oldest, newest = self.index.stats(sid)
        with self.index.lock:
            ahead, ahead_bytes, _ = self.index.ahead(sid, time.time() + FUTURE_AHEAD)
        return {"segment_count": count, "total_bytes": size, "oldest_segment_at": oldest,
                "newest_segment_at": newest, "unsafe": self.unsafe.get(sid),
                "future_dated": {"segments": ahead, "bytes": ahead_bytes},
                "deleted": {r: {"segments": n, "bytes": b} for r, (n, b) in self.deleted.get(sid, {}).items()}}

    def _problem(self) -> str | None:
        # A hang deeper below a stream's folder is found by no probe: a call stuck there is named too,
        # later (a pass over many files may take a while), or retention would stop and say nothing.
        stuck = stuck_text(list(self._calls.values()), time.monotonic(),
                           stuck_after(bool(self.answering.hung), self.cfg.recordings.probe_interval))
        return problem_text(self.failed, self.answering.text(), stuck)

    def view(self) -> dict[str, Any]:
        """The snapshot's top-level ``recordings`` entry."""
        return {"root": str(self.root), "filesystem": self.filesystem, **self.pressure.view(),
                "indexed": self.ready.is_set(),
                "problem": self._problem(),
                "not_answering": sorted(str(self.root / n) for n in self.answering.hung),
                "deletion_errors": self.errors, "clock_steps": len(self.clock.steps),
                "orphans": sorted(set(self.index.streams) - set(self.cfg.streams)),
                "unsafe_directories": dict(sorted(self.unsafe.items()))}



