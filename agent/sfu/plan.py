"""Which of the SFU's producers this agent adopts, and which it may delete (pure).

Outside fleet mode the agent is the SFU's only user: it adopts, per stream it
feeds, the producer in use (else the first with the stream's SSRC and payload
type) and deletes every other producer.

In fleet mode several agents may share one SFU, so a producer is touched only
by its owner.  Producers carry the ``node`` that registered them and its
ownership ``epoch`` (docs/mediasoup-contract.md).  This agent:

* adopts only its own producers (same node) of a stream it runs, whose epoch is
  its epoch or older (its own earlier life: no other FFmpeg sends into it);
  an older one is re-registered under the current epoch (fenced by the SFU);
* deletes its own producers that are duplicates, stale or of streams it no
  longer runs; and a dead node's (no longer registered in etcd) producers of
  streams no node may run (not in the file, or disabled) or of a stream it now
  runs, when their epoch is older than its own;
* never touches a live node's producer, nor one whose owner it cannot tell,
  even of a stream not in its own file (the files differ during a rolling
  config change; an operator may register producers of their own).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Want:
    """A stream this agent feeds into the SFU."""

    ssrc: int
    payload_type: int
    epoch: int = 0              # fleet: the ownership epoch (0: outside fleet mode, or warming)
    in_use: str | None = None   # the producer FFmpeg is pointed at now


@dataclass(frozen=True)
class FleetView:
    """What the fleet knows that producer ownership depends on."""

    me: str
    live_nodes: frozenset[str]  # registered in etcd now
    wanted: frozenset[str]      # streams some node may run (enabled in the file)
    known: bool = True          # live_nodes is etcd's word (False: not yet loaded, or cut off)


@dataclass
class Plan:
    """``adopt``: stream -> listed producer; ``delete``: (producer, fencing epoch or None)."""

    adopt: dict[str, Any] = field(default_factory=dict)
    delete: list[tuple[Any, int | None]] = field(default_factory=list)


def plan(listed: Sequence[Any], wants: Mapping[str, Want], fleet: FleetView | None) -> Plan:
    """Decide from ``GET /producers`` (items with stream_id, ssrc, payload_type, epoch, node)."""
    out = Plan()
    candidates: dict[str, list[Any]] = {}
    for p in listed:
        verdict = _verdict(p, wants, fleet)
        if verdict == "candidate":
            candidates.setdefault(p.stream_id, []).append(p)
        elif verdict == "delete":
            out.delete.append((p, _fencing_epoch(p, wants)))
    for sid, found in candidates.items():
        in_use = wants[sid].in_use
        chosen = next((p for p in found if p.producer_id == in_use), found[0])
        out.adopt[sid] = chosen
        out.delete += [(p, _fencing_epoch(p, wants)) for p in found if p is not chosen]  # duplicates
    return out


def _verdict(p: Any, wants: Mapping[str, Want], fleet: FleetView | None) -> str:
    """``candidate`` (may be adopted), ``delete`` or ``keep`` (not ours to touch)."""
    want = wants.get(p.stream_id)
    matches = want is not None and (p.ssrc, p.payload_type) == (want.ssrc, want.payload_type)
    if matches and want is not None and p.producer_id == want.in_use:
        return "candidate"  # ours for sure: we made or adopted it (even if the SFU does not echo node)
    if fleet is None:  # the only user of this SFU
        return "candidate" if matches else "delete"
    if p.node == fleet.me:
        if want is not None and matches and (p.epoch or 0) <= want.epoch:
            return "candidate"
        return "delete"  # ours: a stale life, a wrong SSRC, or a stream we no longer run
    if p.node is None or p.node in fleet.live_nodes or not fleet.known:
        # A live owner's (or a warming target's), or we cannot tell whose (an operator's, an older
        # agent's; any node's while we do not know who is alive), even of a stream not in our file:
        # during a rolling config change the nodes' files differ, and the live node that runs it
        # closes its own producers when it stops running it.
        return "keep"
    if p.stream_id not in fleet.wanted:
        return "delete"  # a dead node's, of a stream no node may run
    if want is not None and want.epoch and (p.epoch or 0) < want.epoch:
        return "delete"  # a dead node's producer of a stream we now own
    return "keep"


def _fencing_epoch(p: Any, wants: Mapping[str, Want]) -> int | None:
    """The epoch a deletion is made under: ours for a stream we run, else the producer's own."""
    want = wants.get(p.stream_id)
    return (want.epoch if want is not None and want.epoch else None) or p.epoch
