"""Fleet mode: which of the fleet-wide streams this agent runs, decided on etcd.

etcd decides and this module only keeps a cache of it.  The keys, under ``prefix``:

* ``nodes/<name>``: this node's registration (advertise URL, readiness, capacity,
  owned count), bound to the node's one lease (kept alive every TTL/3);
* ``owners/<stream>``: the stream's owner, created with a transaction that succeeds
  only while the key is absent, bound to the owner's lease.  Its create revision is
  the stream's **epoch**: a fencing token in segment names and producer registrations;
* ``handoff/<stream>`` (``{"from", "to"}``, the owner's lease) and ``warm/<stream>``
  (``{"node"}``, the target's lease): a handback to a preferred node that came back.
  The target starts recording first; the owner lets go once the target is live, so
  recording overlaps instead of leaving a gap.

Claims follow agent/fleet/placement.py: the stream's ``prefer`` list, then rendezvous
hashing; each later candidate waits a step, and a node starts at most a few
streams per round.  A node cut off from etcd keeps what it runs (a duplicate is
better than a gap), reports not-ready and claims nothing; back on etcd, it stops
every stream somebody else owns by then.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.config.model import ClusterConfig, Config
from agent.fleet import placement
from agent.fleet.etcd import Compacted, EtcdClient, EtcdError, KeyValue, LeaseLost, WatchEvent
from agent.fleet.fence import VOUCH_INTERVAL, Fence

log = logging.getLogger("vas.fleet")
#: How often the planner runs without a watch event waking it.
PLAN_INTERVAL = 0.25
#: The start window of a cold start, in lease_ttl, and its upper bound in seconds.
START_WINDOW_TTLS = 2.0
START_WINDOW_MAX = 10.0
#: A handback whose target never went live is abandoned after this long.
HANDOFF_TIMEOUT = 60.0
#: Upper bounds (seconds) of the lease-renewal histogram.
RENEWAL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
TAKEOVER_REASONS = ("start", "failover", "handback", "reclaim")


@dataclass
class Owner:
    node: str
    epoch: int  # the ownership key's create revision


@dataclass
class Node:
    name: str
    info: dict[str, Any]
    revision: int       # create revision of its registration: a new one is a new life
    alive_since: float  # monotonic: when this life was first seen


@dataclass
class Stats:
    takeovers: dict[str, int] = field(default_factory=lambda: {r: 0 for r in TAKEOVER_REASONS})
    renewal_counts: list[int] = field(default_factory=lambda: [0] * (len(RENEWAL_BUCKETS) + 1))
    renewal_sum: float = 0.0

    def renewed(self, seconds: float) -> None:
        self.renewal_counts[next((i for i, b in enumerate(RENEWAL_BUCKETS) if seconds <= b),
                                 len(RENEWAL_BUCKETS))] += 1
        self.renewal_sum += seconds

    def renewal_view(self) -> dict[str, Any]:
        total, buckets = 0, []
        for bound, n in zip([*RENEWAL_BUCKETS, "+Inf"], self.renewal_counts):
            total += n
            buckets.append([bound, total])
        return {"buckets": buckets, "sum": self.renewal_sum, "count": total}


class Fleet:
    """This node's part in the fleet.  ``start()``, then ``close()``.

    ``apply(running)`` is called with ``{stream_id: epoch}`` whenever the set of
    streams this node should run changes; ``live(stream_id)`` says whether a
    stream this node runs is live; ``ready()`` whether the agent itself is.
    """

    def __init__(self, cluster: ClusterConfig, cfg: Callable[[], Config], *,
                 apply: Callable[[dict[str, int]], Awaitable[None]], live: Callable[[str], bool],
                 ready: Callable[[], bool], on_change: Callable[[], None],
                 client: EtcdClient | None = None, pgids: Callable[[], list[int]] | None = None) -> None:
        self.cluster, self._cfg = cluster, cfg
        self._apply, self._live, self._ready, self._on_change = apply, live, ready, on_change
        self.me = cluster.node_name
        etcd = cluster.etcd
        self.client = client or EtcdClient(list(etcd.endpoints), username=etcd.username, password=etcd.password,
                                           timeout=max(1.0, cluster.lease_ttl / 3))
        self.prefix = etcd.prefix.rstrip("/")
        self.ttl = max(1, round(cluster.lease_ttl))
        self.step = cluster.lease_ttl / 6
        self.hold_down = 10 * cluster.lease_ttl
        self.settle = cluster.lease_ttl  # a new session waits this long so every live node is seen first
        # The first session (a cold start: after a power cut every host starts at once) waits longer, so
        # that the nodes starting with it are registered and placement honours prefer among them all.
        self.start_window = min(max(START_WINDOW_TTLS * cluster.lease_ttl, self.settle), START_WINDOW_MAX)
        self.window = self.start_window  # this session's; ``settle`` after the first
        # The cache of etcd.
        self.owners: dict[str, Owner] = {}
        self.nodes: dict[str, Node] = {}
        self.handoffs: dict[str, dict[str, Any]] = {}
        self.warm: dict[str, str] = {}
        # What this node does.
        self.mine: dict[str, int] = {}       # streams etcd says this node owns -> epoch
        self.kept: dict[str, int] = {}       # run without a key (cut off, or our key expired): a duplicate beats a gap
        self.warming: set[str] = set()       # handbacks to this node, recording before owning
        self.running: dict[str, int] = {}    # what apply() was last given
        self.unowned_since: dict[str, float] = {}
        self.last_owner: dict[str, str] = {}
        self.my_handoffs: dict[str, float] = {}  # stream -> when this node offered it back
        self.connected = False
        self.lease = 0
        self.session_started = 0.0
        self.stats = Stats()
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._registered: dict[str, Any] | None = None
        self._closed = False
        # A frozen agent's children are stopped by the fence (agent/fleet/fence.py) before the lease expires.
        self.fence = Fence(pgids, cluster.lease_ttl) if pgids is not None else None
        self.contact_at = 0.0  # monotonic: etcd last answered (a keepalive, a session's load)
        self._voucher: asyncio.Task[None] | None = None

    # -- keys ---------------------------------------------------------------------------
    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}/{kind}/{name}"

    def _held_lease(self) -> int:
        """The lease every key of ours is written under.  Between a lost lease and the next session
        it is 0, and a key written then would never expire (an owner for ever): refuse instead."""
        if not self.lease:
            raise LeaseLost("no lease held (it expired): nothing is written until the next session")
        return self.lease

    def _split(self, key: str) -> tuple[str, str] | None:
        rest = key[len(self.prefix) + 1:] if key.startswith(self.prefix + "/") else None
        if rest is None or "/" not in rest:
            return None
        kind, name = rest.split("/", 1)
        return kind, name

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self.fence is not None:
            self.fence.start()
            self._voucher = asyncio.create_task(self._vouch(self.fence), name="vas-fence")
        self._task = asyncio.create_task(self._run(), name="vas-fleet")

    async def _vouch(self, fence: Fence) -> None:
        while True:
            fenced, pid = fence.lapsed_at is not None, fence.pid
            fence.tick()
            if fenced != (fence.lapsed_at is not None) or pid != fence.pid:
                self._on_change()  # the snapshot says ``fenced`` and the (maybe replaced) fence's pid
            await asyncio.sleep(VOUCH_INTERVAL)

    def knows_who_lives(self) -> bool:
        """Whether ``nodes`` is etcd's word now (not before the first answer, cut off, or just thawed)."""
        return self.connected and (self.fence is None or self.fence.lapsed_at is None)

    def may_spawn(self) -> bool:
        """Whether a stream may start a process now (False after a freeze, until etcd answered)."""
        return self.fence is None or self.fence.may_spawn()

    async def close(self) -> None:
        """Leave the fleet: revoking the lease hands every stream over at once."""
        self._closed = True
        for task in (self._task, self._voucher):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.fence is not None:
            self.fence.close()
        if self.lease:
            try:
                await asyncio.wait_for(self.client.revoke(self.lease), 2)
            except (EtcdError, OSError, TimeoutError) as exc:
                log.warning("fleet: could not revoke lease on the way out (%s); it expires in %ds", exc, self.ttl)
        await self.client.close()

    def poke(self) -> None:
        """Something changed locally (config reload, a stream went live): plan soon."""
        self._wake.set()

    async def _run(self) -> None:
        delay = 0.5
        while not self._closed:
            try:
                await self._session()
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if self._closed or current is None or current.cancelling():
                    raise  # close(): we are being cancelled
                # A session task's own CancelledError (not ours): ending here would leave the node
                # running nothing for ever, silently.  It is a failed session like any other.
                log.error("fleet: a session task was cancelled unexpectedly: rejoining")
                self._cut_off("session task cancelled")
            except (EtcdError, OSError, TimeoutError, ValueError) as exc:
                self._cut_off(f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # a bug: log it and carry on like a lost connection
                log.exception("fleet: session failed")
                self._cut_off(repr(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, max(2.0, self.ttl / 2))
            if self.connected:
                delay = 0.5

    def _cut_off(self, why: str) -> None:
        if self.connected:
            log.error("fleet: cut off from etcd (%s): keeping %d streams, claiming nothing, not ready",
                      why, len(self.running))
        self.connected = False
        self.last_error = why
        # Whatever we ran stays running without a key until etcd says otherwise.
        self.kept.update(self.mine)
        self.mine.clear()
        self._on_change()

    async def _session(self) -> None:
        if self.lease:  # a blip (a leader election, one member gone): keep the lease, and so the epochs
            try:
                await self.client.keepalive(self.lease)
            except LeaseLost:
                self.lease = 0
        if not self.lease:
            self.lease = await self.client.grant(self.ttl)
            if self.fence is not None:  # the lease outlives a freeze this long: stopping sooner is a needless gap
                self.fence.ttl = max(self.cluster.lease_ttl, float(self.client.granted_ttl))
        asked = time.monotonic()
        kvs, revision = await self.client.get_prefix(self.prefix + "/")
        self._load(kvs)
        self.contact_at = asked  # when asked, not answered: a freeze in between must not count as contact
        self.connected, self.last_error = True, None
        self.session_started = time.monotonic()
        await self._register(force=True)
        log.info("fleet: joined as %s (lease %x, %d nodes, %d owned streams seen)", self.me, self.lease,
                 len(self.nodes), len(self.owners))
        self._on_change()
        tasks = [asyncio.create_task(self._keepalive(), name="vas-fleet-keepalive"),
                 asyncio.create_task(self._watch(revision + 1), name="vas-fleet-watch"),
                 asyncio.create_task(self._planner(), name="vas-fleet-planner")]
        try:
            # Each task runs for the whole session: any one ending (an error, a cancellation, a return)
            # ends the session, which then starts anew; waiting for an *exception* only would go on
            # without a planner whose task was cancelled.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.cancelled():
                    raise EtcdError(f"fleet: session task {task.get_name()} was cancelled")
                task.result()
            raise EtcdError("fleet: a session task ended")
        finally:
            for task in tasks:
                task.cancel()
            # Bounded: a task that ignored its cancellation must not keep the node out of etcd for ever.
            _, stuck = await asyncio.wait(tasks, timeout=5)
            for task in stuck:
                log.error("fleet: %s did not stop with its session; rejoining without it", task.get_name())

    # -- the cache ----------------------------------------------------------------------
    def _load(self, kvs: list[KeyValue]) -> None:
        """A full resync: the cache becomes exactly what etcd holds."""
        old_nodes = self.nodes
        self.owners, self.nodes, self.handoffs, self.warm = {}, {}, {}, {}
        for kv in kvs:
            self._put(kv, old_nodes)

    def _put(self, kv: KeyValue, old_nodes: dict[str, Node] | None = None) -> None:
        parts = self._split(kv.key)
        if parts is None:
            return
        kind, name = parts
        try:
            data = json.loads(kv.value or b"{}")
        except ValueError:
            log.warning("fleet: ignoring %s: not JSON", kv.key)
            return
        if not isinstance(data, dict):
            return
        if kind == "owners" and isinstance(data.get("node"), str):
            self.owners[name] = Owner(data["node"], kv.create_revision)
            self.last_owner[name] = data["node"]
            self.unowned_since.pop(name, None)
        elif kind == "nodes":
            before = (old_nodes or self.nodes).get(name)
            since = before.alive_since if before and before.revision == kv.create_revision else time.monotonic()
            self.nodes[name] = Node(name, data, kv.create_revision, since)
        elif kind == "handoff":
            self.handoffs[name] = data
        elif kind == "warm" and isinstance(data.get("node"), str):
            self.warm[name] = data["node"]

    def _delete(self, key: str) -> None:
        parts = self._split(key)
        if parts is None:
            return
        kind, name = parts
        if kind == "owners":
            self.owners.pop(name, None)
            self.unowned_since.setdefault(name, time.monotonic())
        elif kind == "nodes":
            self.nodes.pop(name, None)
        elif kind == "handoff":
            self.handoffs.pop(name, None)
        elif kind == "warm":
            self.warm.pop(name, None)

    # -- loops ----------------------------------------------------------------------------
    async def _keepalive(self) -> None:
        period, renewed = self.ttl / 3, time.monotonic()
        while True:
            await asyncio.sleep(period)
            started = time.monotonic()
            try:
                await self.client.keepalive(self.lease)
            except LeaseLost:
                log.error("fleet: lease %x expired (etcd unreachable for %ds?): rejoining", self.lease, self.ttl)
                self.lease = 0
                raise
            except EtcdError:
                if started - renewed < self.ttl:
                    continue  # an election or one member down: retry while the lease still lives
                raise
            renewed, self.contact_at = time.monotonic(), started
            self.stats.renewed(renewed - started)

    async def _watch(self, revision: int) -> None:
        while True:
            try:
                async for events in self.client.watch(self.prefix + "/", revision):
                    for event in events:
                        self._event(event)
                        revision = max(revision, event.kv.mod_revision + 1)
                    self._wake.set()
            except Compacted:
                log.warning("fleet: watch revision %d compacted: resyncing", revision)
                kvs, rev = await self.client.get_prefix(self.prefix + "/")
                self._load(kvs)
                revision = rev + 1
                self._wake.set()

    def _event(self, event: WatchEvent) -> None:
        if event.type == "delete":
            self._delete(event.kv.key)
        else:
            self._put(event.kv)

    async def _planner(self) -> None:
        while True:
            await self._plan()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), PLAN_INTERVAL)
            except TimeoutError:
                pass

    # -- decisions ---------------------------------------------------------------------
    def _views(self, now: float) -> tuple[list[placement.StreamView], dict[str, placement.NodeView]]:
        cfg = self._cfg()
        owned: dict[str, int] = {}
        for o in self.owners.values():
            owned[o.node] = owned.get(o.node, 0) + 1
        nodes = {}
        for name, n in self.nodes.items():
            ready = bool(n.info.get("ready"))
            capacity = int(n.info.get("capacity") or 0)
            # Seen registered a little after it began its window; one step more for its planner to run.
            settles_at = n.alive_since + self.start_window + self.step
            nodes[name] = placement.NodeView(name, ready, owned.get(name, 0), capacity, n.alive_since, settles_at)
        streams = []
        for sid, s in cfg.streams.items():
            if not s.enabled:
                continue
            owner = self.owners.get(sid)
            since = None if owner else self.unowned_since.setdefault(sid, now)
            streams.append(placement.StreamView(sid, s.placement.prefer, s.placement.allow,
                                                owner.node if owner else None, since))
        return streams, nodes

    async def _plan(self) -> None:
        now = time.monotonic()
        cfg = self._cfg()
        wanted = {sid for sid, s in cfg.streams.items() if s.enabled}
        # Ownership as etcd now says.
        for sid in list(self.mine):
            owner = self.owners.get(sid)
            if owner is None or owner.node != self.me or owner.epoch != self.mine[sid]:
                epoch = self.mine.pop(sid)
                if owner is None:
                    self.kept[sid] = epoch  # our key vanished under us: run on, claim again below
                else:
                    log.warning("fleet: %s is now owned by %s (epoch %d): stopping it here", sid, owner.node,
                                owner.epoch)
        for sid, owner in self.owners.items():
            if owner.node == self.me and sid not in self.mine and sid in wanted:
                self.mine[sid] = owner.epoch  # ours (e.g. after a resync)
                self.kept.pop(sid, None)
                self.warming.discard(sid)
        for sid in list(self.kept):  # somebody else owns it now: theirs alone
            owner = self.owners.get(sid)
            if sid not in wanted or (owner is not None and owner.node != self.me):
                if owner is not None:
                    log.warning("fleet: %s is owned by %s: stopping the copy kept here", sid, owner.node)
                self.kept.pop(sid)
        # Streams removed from the file (or disabled): let go of them.
        for sid in [s for s in self.mine if s not in wanted]:
            await self._release(sid)
        if self.connected:
            await self._claim_kept(wanted)
            await self._claim(now)
            await self._handback(now)
            await self._receive()
        await self._publish()
        if self.fence is not None and self.connected and self.fence.lapsed_at is not None:
            self.fence.resume(self.contact_at)  # after a freeze: only once what runs is etcd's say
            self._on_change()
        await self._register()

    async def _create(self, sid: str, reason: str) -> bool:
        body = json.dumps({"node": self.me}).encode()
        created, kv, _rev = await self.client.create(self._key("owners", sid), body, self._held_lease())
        if created and kv is not None:
            self.owners[sid] = Owner(self.me, kv.create_revision)
            self.mine[sid] = kv.create_revision
            self.kept.pop(sid, None)
            self.warming.discard(sid)
            self.unowned_since.pop(sid, None)
            self.stats.takeovers[reason] += 1
            previous = self.last_owner.get(sid)
            self.last_owner[sid] = self.me
            log.info("fleet: claimed %s (epoch %d, %s%s)", sid, kv.create_revision, reason,
                     f" from {previous}" if previous and previous != self.me else "")
            return True
        if kv is not None:
            self._put(kv)
        return False

    async def _claim_kept(self, wanted: set[str]) -> None:
        for sid in [s for s in self.kept if s in wanted and s not in self.owners]:
            await self._create(sid, "reclaim")

    async def _claim(self, now: float) -> None:
        if now - self.session_started < self.window:
            return  # first learn who else is alive: a node that just joined does not grab everything
        self.window = self.settle
        streams, nodes = self._views(now)
        for sid in placement.plan_claims(self.me, streams, nodes, now, my_owned=len(self.mine),
                                         my_capacity=self.cluster.max_streams, step=self.step):
            if sid in self.owners:
                continue
            previous = self.last_owner.get(sid)
            reason = "handback" if sid in self.warming else ("failover" if previous and previous != self.me
                                                             else "start")
            await self._create(sid, reason)

    async def _handback(self, now: float) -> None:
        """Offer streams to a node ahead of this one that has been up for the hold-down."""
        streams, nodes = self._views(now)
        mine = [s for s in streams if s.owner == self.me and s.id in self.mine and s.id not in self.my_handoffs]
        offers = placement.MAX_STARTS_PER_ROUND - len(self.my_handoffs)  # handovers in flight, at most
        for sid, target in placement.plan_handback(self.me, mine, nodes, now, hold_down=self.hold_down,
                                                   max_offers=offers):
            await self.client.put(self._key("handoff", sid), json.dumps({"from": self.me, "to": target}).encode(),
                                  self._held_lease())
            self.my_handoffs[sid] = now
            log.info("fleet: handing %s back to %s (ahead of this node in its placement); recording here until "
                     "it is live", sid, target)
        for sid, offered in list(self.my_handoffs.items()):
            offer = self.handoffs.get(sid) or {}
            to = offer.get("to")
            if sid not in self.mine:  # lost it meanwhile: the offer is void
                await self._drop_handoff(sid)
                continue
            if to is not None and self.warm.get(sid) == to:
                epoch = self.mine[sid]
                if await self.client.delete_if(self._key("owners", sid), epoch):
                    self.mine.pop(sid, None)
                    self.owners.pop(sid, None)
                    self.unowned_since[sid] = now
                    log.info("fleet: %s is live on %s: stopping it here", sid, to)
                await self._drop_handoff(sid)
            elif now - offered > HANDOFF_TIMEOUT:
                log.warning("fleet: %s: %s did not go live within %gs; keeping it", sid, to, HANDOFF_TIMEOUT)
                await self._drop_handoff(sid)

    async def _drop_handoff(self, sid: str) -> None:
        self.my_handoffs.pop(sid, None)
        kv = await self.client.get(self._key("handoff", sid))
        if kv is not None:
            await self.client.delete_if(kv.key, kv.create_revision)

    async def _receive(self) -> None:
        """Handbacks to this node: record first (warming), say so once live, then own."""
        for sid, offer in list(self.handoffs.items()):  # the watch changes the cache while a put is awaited
            if offer.get("to") == self.me and sid not in self.mine and sid in self._cfg().streams:
                if sid not in self.warming:
                    log.info("fleet: %s offered back by %s: starting it here first", sid, offer.get("from"))
                self.warming.add(sid)
                if self._live(sid) and self.warm.get(sid) != self.me:
                    await self.client.put(self._key("warm", sid), json.dumps({"node": self.me}).encode(),
                                          self._held_lease())
                    self.warm[sid] = self.me
        for sid in list(self.warming):
            if sid in self.mine or (sid not in self.handoffs and sid in self.owners):
                self.warming.discard(sid)
                if self.warm.get(sid) == self.me:
                    kv = await self.client.get(self._key("warm", sid))
                    if kv is not None:
                        await self.client.delete_if(kv.key, kv.create_revision)
                    self.warm.pop(sid, None)

    async def _release(self, sid: str) -> None:
        epoch = self.mine.pop(sid)
        if self.connected:
            await self.client.delete_if(self._key("owners", sid), epoch)
        self.owners.pop(sid, None)

    async def _publish(self) -> None:
        running = {**self.kept, **{sid: 0 for sid in self.warming}, **self.mine}
        if running != self.running:
            self.running = running
            await self._apply(dict(running))
            self._on_change()

    async def _register(self, force: bool = False) -> None:
        info = {"url": self.cluster.advertise_url, "ready": self.connected and self._ready(),
                "capacity": self.cluster.max_streams, "owned": len(self.mine)}
        if force or info != self._registered:
            await self.client.put(self._key("nodes", self.me), json.dumps(info).encode(), self._held_lease())
            self._registered = info
            self._on_change()

    # -- what others see --------------------------------------------------------------
    def view(self) -> dict[str, Any]:
        """The snapshot's ``fleet`` section: this node's cache of etcd (no credentials)."""
        owned: dict[str, int] = {}
        for o in self.owners.values():
            owned[o.node] = owned.get(o.node, 0) + 1
        return {
            "node": self.me, "etcd_up": self.connected, "last_error": self.last_error,
            "lease_ttl_seconds": self.ttl, "advertise_url": self.cluster.advertise_url,
            "fence_pid": self.fence.pid if self.fence is not None else None,
            "fenced": self.fence is not None and self.fence.lapsed_at is not None,  # frozen; waiting for etcd
            "streams": sorted(sid for sid, s in self._cfg().streams.items() if s.enabled),
            "owned": sorted(self.mine), "kept_without_key": sorted(self.kept), "warming": sorted(self.warming),
            "nodes": {name: {"url": n.info.get("url"), "ready": bool(n.info.get("ready")),
                             "capacity": n.info.get("capacity"), "owned": owned.get(name, 0)}
                      for name, n in sorted(self.nodes.items())},
            "owners": {sid: {"node": o.node, "epoch": o.epoch} for sid, o in sorted(self.owners.items())},
            "takeovers": dict(self.stats.takeovers),
            "lease_renewal_seconds": self.stats.renewal_view(),
        }
