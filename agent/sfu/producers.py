"""One SFU producer per stream that feeds the SFU, and each stream pointed at it.

When the SFU becomes ready (first start or a restart), and then on every poll,
the manager reconciles: it lists the SFU's producers, adopts the one that
matches a stream (same SSRC and payload type: after an agent restart nothing
is duplicated), creates the missing ones, closes duplicates and those of
streams removed or disabled, and tells every stream where to send (a running
FFmpeg whose target changed restarts, reason ``sfu``).  In fleet mode it
touches only producers it owns (agent/sfu/plan.py).  While the SFU is up
it polls ``GET /producers``: packets increasing confirm a stream (``ready`` ->
``live``); packets standing still while FFmpeg makes progress mark it
degraded, and a few polls later the producer is re-created and the stream
restarted.

Each producer has one RTP source port (agent/supervise/rtp_source.py) for its whole
life, adopted ones included (``source_port`` from ``GET /producers``): a
comedia transport accepts only the sender it first heard, so a restarted
FFmpeg must send from the same port.  New producers are announced with the
stream's real H.264 profile (agent/supervise/h264_probe.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agent.config.model import stream_ssrc
from agent.sfu import plan as producer_plan
from agent.supervise import rtp_source
from agent.supervise.ffmpeg import RtpTarget

if TYPE_CHECKING:
    from agent.supervise.stream import Stream

log = logging.getLogger("vas.sfu")
POLL_INTERVAL = 2.0
#: Polls without new packets (while FFmpeg progresses) before the producer is re-created.
REPAIR_AFTER_POLLS = 3
#: Seconds between probes of a run's profile while its source does not answer them (a camera
#: restarting: FFmpeg, started alongside, may still reach it once it is back).  The run's
#: FFmpeg gives up on an absent camera within its RTSP timeout (10 s), and its next run probes anew.
PROFILE_RETRIES = (1.0, 2.0, 4.0, 8.0)


class ProducerApi(Protocol):
    """The part of the SFU contract producers need (agent/sfu/client.py)."""

    async def create_producer(self, stream_id: str, *, ssrc: int, payload_type: int,
                              epoch: int | None = None, node: str | None = None,
                              profile_level_id: str | None = None) -> Any: ...
    async def adopt_producer(self, producer_id: str, *, epoch: int | None, node: str | None) -> None: ...
    async def producers(self) -> list[Any]: ...
    async def delete_producer(self, producer_id: str, *, epoch: int | None = None) -> bool: ...


@dataclass
class Producer:
    """What the agent knows of one stream's producer."""

    producer_id: str
    target: RtpTarget
    since: float = field(default_factory=time.time)
    packets: int = 0
    bytes: int = 0
    score: float | None = None
    confirmed: bool = False
    quiet_polls: int = 0
    profile_level_id: str | None = None
    #: Made with a profile just looked up: the first spawn onto it need not probe again.
    profile_fresh: bool = False
    #: The first RTP sequence number of the last FFmpeg run, and the packets counted when it began.
    seq_start: int | None = None
    packets_at_seq_start: int = 0

    def next_seq(self) -> int:
        """The first sequence number for a new FFmpeg run onto this producer (rtp_source.next_seq)."""
        self.seq_start = rtp_source.next_seq(self.seq_start, self.packets - self.packets_at_seq_start)
        self.packets_at_seq_start = self.packets
        return self.seq_start

    def view(self) -> dict[str, Any]:
        return {"id": self.producer_id, "rtp_host": self.target.host, "rtp_port": self.target.port,
                "ssrc": self.target.ssrc, "payload_type": self.target.payload_type, "since": self.since,
                "packets": self.packets, "bytes": self.bytes, "score": self.score, "confirmed": self.confirmed,
                "source_port": self.target.source_port, "profile_level_id": self.profile_level_id}


class ProducerManager:
    """Keeps producers in step with the streams; ``sfu_up()`` / ``sfu_down()`` / ``close()``."""

    def __init__(self, api: ProducerApi, streams: Callable[[], Mapping[str, Stream]], *,
                 on_change: Callable[[bool], None], poll_interval: float = POLL_INTERVAL,
                 fleet: Callable[[], producer_plan.FleetView | None] | None = None,
                 profile: Callable[[Stream], Awaitable[str | None]] | None = None,
                 profile_check: Callable[[Stream], Awaitable[str | None]] | None = None) -> None:
        self.api, self._streams, self._on_change = api, streams, on_change
        # The stream's H.264 profile-level-id (agent/supervise/h264_probe.py): for a new producer (a known answer
        # for the same input will do), and after a spawn (probed again: check_profile).
        self._profile, self._profile_check = profile, profile_check
        self._fleet_view = fleet  # fleet mode: whose producers are whose (agent/sfu/plan.py)
        self.poll_interval = poll_interval
        self.producers: dict[str, Producer] = {}
        self._poller: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one reconcile at a time
        self._repairs: dict[str, int] = {}  # re-creations per stream since it last received
        self._listed_ports: set[int] = set()  # source ports the SFU's transports are locked to
        self.up = False

    async def sfu_up(self) -> None:
        """The SFU (re)started and is ready: reconcile, then watch packets."""
        self.up = True
        await self.close()  # the poller of the last life: its listing (it holds the lock) is of a dead SFU
        self.producers.clear()  # a new SFU life: whatever we knew is gone
        await self.reconcile()
        self._poller = asyncio.create_task(self._poll(), name="producers")

    def sfu_down(self) -> None:
        """The SFU is gone: its producers with it.  Streams keep running (recording goes on)."""
        self.up = False
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        self.producers.clear()
        for stream in self._streams().values():
            stream.rtp, stream.producer = None, None  # no restart: FFmpeg keeps recording
            stream.confirm_producer(False)
            stream.mark_changed()
        self._on_change(True)

    async def close(self) -> None:
        """Stop polling (producers are left to the SFU: an agent restart adopts them)."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.wait([self._poller])
            self._poller = None

    async def reconcile(self) -> None:
        """Make the SFU's producers match the streams; point every stream at its own."""
        if not self.up:
            return
        async with self._lock:
            listed = await self._list()
            if listed is not None:
                await self._sync(listed)

    async def _list(self) -> list[Any] | None:
        try:
            return await self.api.producers()
        except Exception as exc:  # SfuError and anything odd: logged, retried next poll
            log.warning("producers: cannot list: %s", exc)
            return None

    async def _sync(self, listed: list[Any]) -> None:
        """Adopt, delete and create as agent/sfu/plan.py decides (under the lock)."""
        streams = self._streams()
        wanted = {sid: s for sid, s in streams.items() if s.feeds_sfu}
        wants = {sid: _want(s, self.producers.get(sid)) for sid, s in wanted.items()}
        decided = producer_plan.plan(listed, wants, self._fleet())
        self._listed_ports = {port for p in listed if isinstance(port := getattr(p, "source_port", None), int)}
        doomed = {p.producer_id for p, _ in decided.delete}
        for sid in set(self.producers) - set(wanted):  # ours for sure, even if the SFU echoes no node
            gone = self.producers[sid].producer_id
            decided.delete += [(p, p.epoch) for p in listed if p.producer_id == gone and gone not in doomed]
        for p, epoch in decided.delete:
            await self._delete(p.producer_id, p.stream_id, epoch)
        for sid in set(self.producers) - set(wanted):
            self.producers.pop(sid, None)
            if (stream := streams.get(sid)) is not None:
                stream.producer = None
                stream.mark_changed()
        jobs = [self._ensure(stream, decided.adopt.get(sid)) for sid, stream in wanted.items()]
        if any(await asyncio.gather(*jobs)) or decided.delete:
            self._on_change(True)

    def _fleet(self) -> producer_plan.FleetView | None:
        return self._fleet_view() if self._fleet_view is not None else None

    async def _ensure(self, stream: Stream, match: Any) -> bool:
        """Point ``stream`` at ``match`` (adopted) or a new producer; False when nothing changed."""
        sid, (ssrc, pt) = stream.cfg.id, _expected(stream)
        known = self.producers.get(sid)
        fleet = self._fleet()
        node = fleet.me if fleet is not None else None
        # Ours from an earlier epoch; an SFU that does not echo the fleet fields cannot be re-fenced.
        refence = fleet is not None and match is not None and match.node is not None \
            and (match.epoch or 0) < stream.epoch
        try:
            if refence:  # ours from an earlier epoch (a reclaim, a handback): fence it with this one
                await self.api.adopt_producer(match.producer_id, epoch=stream.epoch, node=node)
                log.info("producers: %s keeps %s, now under epoch %d", sid, match.producer_id, stream.epoch)
            if match is not None and known is not None and known.producer_id == match.producer_id \
                    and stream.producer is known:
                return refence  # in use and ours: nothing else to do
            if match is not None:
                producer = _adopted(match, ssrc, pt, known, stream.rtp_running, self._taken())
                log.info("producers: %s adopted %s (rtp %s)", sid, match.producer_id, producer.target.url)
            else:
                producer = await self._create(stream, ssrc, pt, node)
        except Exception as exc:
            log.warning("producers: %s: %s; retrying", sid, exc)
            return False
        self.producers[sid] = stream.producer = producer
        await stream.use_producer(producer.target)
        return True

    async def _create(self, stream: Stream, ssrc: int, pt: int, node: str | None) -> Producer:
        """``POST /producers`` with the stream's profile; every FFmpeg run sends from one new port."""
        profile = await self._profile(stream) if self._profile is not None else None
        made = await self.api.create_producer(stream.cfg.id, ssrc=ssrc, payload_type=pt,
                                              epoch=stream.epoch or None, node=node, profile_level_id=profile)
        target = RtpTarget(made.rtp_host, made.rtp_port, ssrc, pt, rtp_source.pick(made.rtp_host, self._taken()))
        log.info("producers: %s created %s (rtp %s%s)", stream.cfg.id, made.producer_id, target.url,
                 f", H.264 {profile}" if profile else "")
        return Producer(made.producer_id, target, profile_level_id=profile, profile_fresh=True)

    def _taken(self) -> set[int]:
        """Source ports of the other producers (and the SFU's locked ones): a new one keeps clear of them.

        They are free while their FFmpeg is down, so the kernel may offer them again.
        """
        ports = {p.target.source_port for p in self.producers.values() if p.target.source_port is not None}
        return ports | self._listed_ports

    def due(self, stream_id: str) -> bool:
        """True while this stream's producer is still to be made or re-made (the SFU is up)."""
        return self.up and stream_id not in self.producers

    async def check_profile(self, stream_id: str) -> None:
        """A new FFmpeg run: if the source's H.264 profile changed, a producer announcing the new one.

        Probed alongside the run (the common case costs no delay), except for
        the first run onto a producer just made with a looked-up profile; a
        source that does not answer is asked again while the run lasts.  Only
        a producer whose profile is known is compared: one an SFU does not
        echo the profile of is kept.
        """
        stream, producer = self._streams().get(stream_id), self.producers.get(stream_id)
        if self._profile_check is None or stream is None or producer is None or producer.profile_level_id is None:
            return
        if producer.profile_fresh:
            producer.profile_fresh = False
            return
        run = stream.child
        profile = await self._profile_check(stream)
        for delay in PROFILE_RETRIES:  # unanswered: while this run lasts, ask again
            if profile is not None:
                break
            await asyncio.sleep(delay)
            if stream.child is not run or self.producers.get(stream_id) is not producer:
                return  # a new run checks for itself
            profile = await self._profile_check(stream)
        if profile is None or profile == producer.profile_level_id or self.producers.get(stream_id) is not producer:
            return
        log.warning("producers: %s now sends H.264 %s, its producer was made for %s; re-creating it",
                    stream_id, profile, producer.profile_level_id)
        await self.replace(stream_id)

    async def replace(self, stream_id: str) -> None:
        """A new producer for the stream: its source port was taken, or its profile changed.

        A transport is locked to the old port (comedia), so a new port needs a
        new producer; a producer's codec cannot change.  A stream about to
        spawn waits for it; a running one is restarted onto it (reason ``sfu``).
        """
        async with self._lock:
            producer = self.producers.pop(stream_id, None)
            stream = self._streams().get(stream_id)
            if producer is None or stream is None or not self.up:
                return
            stream.producer = None
            await self._delete(producer.producer_id, stream_id, stream.epoch or None)
            listed = await self._list()
            if listed is not None:
                await self._sync([p for p in listed if p.producer_id != producer.producer_id])

    async def _delete(self, producer_id: str, stream_id: str, epoch: int | None = None) -> None:
        try:
            await self.api.delete_producer(producer_id, epoch=epoch)
            log.info("producers: closed %s of %s", producer_id, stream_id)
        except Exception as exc:
            log.warning("producers: cannot close %s of %s: %s", producer_id, stream_id, exc)

    async def _poll(self) -> None:
        while self.up:
            await asyncio.sleep(self.poll_interval)
            async with self._lock:  # a listing older than a concurrent reconcile would re-create
                listed = await self._list()
                if listed is None or not self.up:
                    continue
                await self._poll_once(listed)

    async def _poll_once(self, listed: list[Any]) -> None:
        """Read the counters, repair the silent, then reconcile with the same listing.

        Reconciling on every poll (not only at SFU start) removes what appears
        later: a duplicate from a ``POST /producers`` that completed after its
        timeout, or a producer left by a node that died.  It costs no call
        when nothing is wrong.
        """
        stats = {p.producer_id: p for p in listed}
        repaired: set[str] = set()
        for sid in self._check(stats):  # closed first: reconcile would adopt it again
            self._repairs[sid] = self._repairs.get(sid, 0) + 1
            stream = self._streams().get(sid)
            gone = self.producers.pop(sid).producer_id
            repaired.add(gone)
            await self._delete(gone, sid, (stream.epoch or None) if stream is not None else None)
        for sid in [sid for sid, p in self.producers.items() if p.producer_id not in stats]:
            self.producers.pop(sid)  # the SFU lost it (or someone closed it): make a new one
        await self._sync([p for p in listed if p.producer_id not in repaired])

    def _check(self, stats: Mapping[str, Any]) -> list[str]:
        """Update counters; confirm or degrade streams; the ones to repair."""
        streams, repair, changed = self._streams(), [], False
        for sid, producer in self.producers.items():
            current, stream = stats.get(producer.producer_id), streams.get(sid)
            if current is None or stream is None:
                continue
            flowing = current.packets > producer.packets
            producer.packets, producer.bytes, producer.score = current.packets, current.bytes, current.score
            stream.mark_changed()
            changed = True
            running = stream.rtp_running == producer.target
            if flowing:  # received since the last poll, from this run or the one that just ended
                producer.quiet_polls = 0
            if flowing and running:
                producer.confirmed = True
                self._repairs.pop(sid, None)
                stream.confirm_producer(True)
            elif running and _progressing(stream, self.poll_interval):
                producer.quiet_polls += 1
                if producer.confirmed:
                    producer.confirmed = False
                    stream.confirm_producer(False)
                # Spaced out: a producer that never receives is not re-made every few seconds.
                if producer.quiet_polls >= REPAIR_AFTER_POLLS * 2 ** min(self._repairs.get(sid, 0), 5):
                    log.warning("producers: %s receives nothing; re-creating its producer", sid)
                    repair.append(sid)
        if changed:
            self._on_change(False)
        return repair


def _adopted(match: Any, ssrc: int, pt: int, known: Producer | None, running: RtpTarget | None,
             taken: set[int]) -> Producer:
    """An existing producer, sent to from the port its transport is locked to (or a new one)."""
    port = getattr(match, "source_port", None)
    if port is None and known is not None and known.producer_id == match.producer_id:
        port = known.target.source_port  # ours already: the SFU does not echo source_port
    if port is None and running is not None and (running.host, running.port) == (match.rtp_host, match.rtp_port):
        port = running.source_port  # FFmpeg sends to it now (the SFU was hung, not restarted): keep it running
    if port is None:  # nothing received yet (not locked), or an SFU that does not say: a port of our own
        port = rtp_source.pick(match.rtp_host, taken)
    target = RtpTarget(match.rtp_host, match.rtp_port, ssrc, pt, port)
    return Producer(match.producer_id, target, packets=match.packets, bytes=match.bytes,
                    profile_level_id=getattr(match, "profile_level_id", None))


def _want(stream: Stream, known: Producer | None) -> producer_plan.Want:
    ssrc, pt = _expected(stream)
    return producer_plan.Want(ssrc, pt, stream.epoch, known.producer_id if known else None)


def _expected(stream: Stream) -> tuple[int, int]:
    return stream_ssrc(stream.cfg), stream.cfg.rtp.payload_type


def _progressing(stream: Stream, window: float) -> bool:
    """The running FFmpeg reported progress lately (without progress reports: assume it does).
    A report of the run before does not count: a new run is silent until it has reached the camera.
    Monotonic times: after a wall-clock step back, this run's reports would look older than its start."""
    child, last = stream.child, stream.progressed_at
    if not stream.cfg.reports_progress:
        return child is not None
    return (child is not None and last is not None and last >= child.started_at
            and time.monotonic() - last < 3 * window + 2)
