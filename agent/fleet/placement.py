"""Fleet placement: which node should run a stream, decided the same way on every node.

Pure functions of a view of the fleet (no I/O, no clock: ``now`` is passed in).
The claim order of a stream is its ``prefer`` list (live, allowed nodes, in the
given order), then rendezvous (highest-random-weight) hashing over the other
live allowed nodes: stable across hosts and processes, and removing one node
moves only the streams it was first for.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Seconds a preferred node must have been continuously alive before it gets its streams back.
HANDBACK_HOLD_DOWN = 30.0
#: Seconds between successive candidates' claim attempts for the same stream.
CLAIM_STEP = 0.5
#: Streams one node claims per planning round (a big takeover must not overload the survivor).
MAX_STARTS_PER_ROUND = 8


@dataclass(frozen=True)
class NodeView:
    name: str
    ready: bool
    owned: int
    capacity: int
    alive_since: float  # same clock as ``now``: when this node was first seen continuously registered
    #: When this node's start window ends (same clock): until then nodes behind it leave its streams alone.
    settles_at: float = 0.0

    @property
    def full(self) -> bool:
        return self.owned >= self.capacity


@dataclass(frozen=True)
class StreamView:
    id: str
    prefer: tuple[str, ...]
    allow: tuple[str, ...]
    owner: str | None
    unowned_since: float | None  # when it was seen without an owner (None while owned)


def score(node: str, stream_id: str) -> int:
    """The rendezvous weight of ``node`` for ``stream_id`` (same on every host)."""
    digest = hashlib.blake2b(f"{node}\0{stream_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _allowed(stream: StreamView, node: str) -> bool:
    return not stream.allow or node in stream.allow


def _order(stream: StreamView, usable: set[str]) -> list[str]:
    first = [n for n in dict.fromkeys(stream.prefer) if n in usable]
    return first + sorted(usable - set(first), key=lambda n: (-score(n, stream.id), n))


def candidates(stream: StreamView, nodes: Mapping[str, NodeView]) -> list[str]:
    """The claim order: live, ready, allowed nodes with room; ``prefer`` first, then by score."""
    return _order(stream, {n for n, v in nodes.items() if v.ready and not v.full and _allowed(stream, n)})


def plan_claims(me: str, streams: Sequence[StreamView], nodes: Mapping[str, NodeView], now: float, *,
                my_owned: int, my_capacity: int, step: float = CLAIM_STEP,
                max_starts: int = MAX_STARTS_PER_ROUND) -> list[str]:
    """Unowned streams this node should try to claim now.

    This node's rank ``r`` in a stream's claim order must have waited ``r * step``
    since the stream was seen unowned, and since every node ahead of it ended its
    start window (the first candidate claims at once).  At
    most ``min(max_starts, my_capacity - my_owned)``, best rank first, then the
    longest unowned, then by id.
    """
    room = min(max_starts, my_capacity - my_owned)
    if room <= 0:
        return []
    due: list[tuple[int, float, str]] = []
    for s in streams:
        if s.owner is not None or s.unowned_since is None:
            continue
        order = candidates(s, nodes)
        if me not in order:
            continue
        rank = order.index(me)
        # A node ahead that is still in its start window (a cold start: every host at once) has
        # until its window ends before this one's turn comes: no claim that a handback undoes.
        since = max([s.unowned_since, *(nodes[n].settles_at for n in order[:rank])])
        if now - since >= rank * step:
            due.append((rank, s.unowned_since, s.id))
    return [sid for _, _, sid in sorted(due)[:room]]


def plan_handback(me: str, streams: Sequence[StreamView], nodes: Mapping[str, NodeView], now: float, *,
                  hold_down: float = HANDBACK_HOLD_DOWN, max_offers: int = MAX_STARTS_PER_ROUND
                  ) -> list[tuple[str, str]]:
    """``(stream, node)`` pairs: streams this node owns that belong on a node ahead of it.

    "Ahead" is the claim order without capacity (``prefer`` first, then rendezvous):
    a preferred node that came back, or a node that joined after this one took
    the stream (a fleet that started one host at a time, a rolling restart).  The
    stream goes to the first node ahead of this one that is allowed, ready, has a
    free slot and has been alive for ``hold_down`` (no flapping); at most
    ``max_offers`` pairs, and never more to one node than its free slots.
    """
    free = {n: max(0, v.capacity - v.owned) for n, v in nodes.items()}
    out: list[tuple[str, str]] = []
    for s in streams:
        if len(out) >= max_offers:
            break
        if s.owner != me:
            continue
        others = {n for n, v in nodes.items() if n != me and v.ready and _allowed(s, n)}
        if _allowed(s, me):
            order = _order(s, others | {me})
            ahead = order[:order.index(me)]
        else:  # no longer allowed here: any allowed node will do
            ahead = _order(s, others)
        for node in ahead:
            v = nodes[node]
            if now - v.alive_since < hold_down or free.get(node, 0) <= 0:
                continue
            free[node] -= 1
            out.append((s.id, node))
            break
    return out
