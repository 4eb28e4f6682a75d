"""Which SFU producers an agent adopts or deletes (agent/sfu/plan.py): pure."""
from __future__ import annotations

from dataclasses import dataclass

from agent.sfu.plan import FleetView, Want, plan


@dataclass(frozen=True)
class P:
    producer_id: str
    stream_id: str
    ssrc: int = 1
    payload_type: int = 96
    epoch: int | None = None
    node: str | None = None


FLEET = FleetView("a", frozenset({"a", "b"}), frozenset({"s1", "s2", "s3"}))


def ids(pairs) -> list[tuple[str, int | None]]:
    return [(p.producer_id, epoch) for p, epoch in pairs]


def test_outside_a_fleet_the_first_match_is_adopted_and_the_rest_deleted():
    listed = [P("p1", "s1"), P("p2", "s1"), P("p3", "gone"), P("p4", "s1", ssrc=9)]
    out = plan(listed, {"s1": Want(1, 96, in_use="p2")}, None)
    assert out.adopt == {"s1": listed[1]}
    assert ids(out.delete) == [("p3", None), ("p4", None), ("p1", None)]


def test_another_live_nodes_producers_are_never_touched():
    """Issue 16 item 11: b runs s2 on the same SFU; a deletes nothing of it."""
    listed = [P("p1", "s1", epoch=10, node="a"), P("p2", "s2", epoch=11, node="b"), P("p3", "s3")]
    out = plan(listed, {"s1": Want(1, 96, epoch=10)}, FLEET)
    assert out.adopt == {"s1": listed[0]} and out.delete == []


def test_a_live_owners_producer_of_our_stream_is_neither_adopted_nor_deleted():
    """Issue 16 item 12: only our own producers are adopted; a stale owner (lower epoch) is
    kept out by the SFU's fence, a newer owner's producer is left alone."""
    listed = [P("p1", "s1", epoch=12, node="b")]
    out = plan(listed, {"s1": Want(1, 96, epoch=10)}, FLEET)
    assert out.adopt == {} and out.delete == []


def test_a_dead_nodes_older_producer_of_our_stream_is_deleted_under_our_epoch():
    listed = [P("p1", "s1", epoch=5, node="c"), P("p2", "s1", epoch=15, node="c")]
    out = plan(listed, {"s1": Want(1, 96, epoch=10)}, FLEET)
    assert out.adopt == {} and ids(out.delete) == [("p1", 10)]


def test_our_own_duplicates_stale_lives_and_streams_no_node_runs_are_deleted():
    """Issue 16 item 14: a late duplicate of ours goes; the one in use stays."""
    listed = [P("p1", "s1", epoch=10, node="a"), P("p2", "s1", epoch=10, node="a"),
              P("p3", "s2", epoch=4, node="a"), P("p4", "removed", epoch=3, node="c")]
    out = plan(listed, {"s1": Want(1, 96, epoch=10, in_use="p2")}, FLEET)
    assert out.adopt == {"s1": listed[1]}
    assert ids(out.delete) == [("p3", 4), ("p4", 3), ("p1", 10)]


def test_our_earlier_life_is_adopted_and_a_warming_stream_keeps_its_unfenced_producer():
    listed = [P("p1", "s1", epoch=7, node="a"), P("p2", "s2", node="a")]
    out = plan(listed, {"s1": Want(1, 96, epoch=10), "s2": Want(1, 96, epoch=0)}, FLEET)
    assert out.adopt == {"s1": listed[0], "s2": listed[1]} and out.delete == []


def test_the_producer_in_use_stays_ours_when_the_sfu_does_not_echo_node_or_epoch():
    """No endless re-creation against an SFU that forgets the fleet fields."""
    listed = [P("p1", "s1"), P("p2", "s1")]
    out = plan(listed, {"s1": Want(1, 96, epoch=10, in_use="p2")}, FLEET)
    assert out.adopt == {"s1": listed[1]} and out.delete == []


def test_a_live_nodes_or_an_unknown_owners_producer_of_a_stream_not_in_our_file_is_kept():
    """During a rolling config change b runs a stream a's file does not have yet;
    an operator (or an older agent) registered a producer with no node.  Neither is a's to close."""
    listed = [P("p1", "new-cam", epoch=12, node="b"), P("p2", "operator-feed"), P("p3", "old", epoch=2, node="c")]
    out = plan(listed, {}, FLEET)
    assert out.adopt == {} and ids(out.delete) == [("p3", 2)]


def test_no_node_is_taken_for_dead_while_etcd_has_not_said_who_lives():
    """An agent started while etcd is unreachable (or cut off) has no live-node list;
    another node's producer must not look like a dead node's."""
    listed = [P("p1", "new-cam", epoch=12, node="b"), P("p2", "s1", epoch=3, node="b")]
    blind = FleetView("a", frozenset(), frozenset({"s1"}), known=False)
    out = plan(listed, {"s1": Want(1, 96, epoch=10)}, blind)
    assert out.adopt == {} and out.delete == []
