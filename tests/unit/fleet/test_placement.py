"""Fleet placement (agent/fleet/placement.py): pure, the same on every node."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.fleet.placement import NodeView, StreamView, candidates, plan_claims, plan_handback, score

NAMES = ["rec-01", "rec-02", "rec-03", "rec-04", "rec-05"]


def nodes(*names: str, owned: int = 0, capacity: int = 100, ready: bool = True, since: float = 0.0):
    return {n: NodeView(n, ready, owned, capacity, since) for n in names}


def unowned(sid: str, prefer=(), allow=(), since: float = 0.0) -> StreamView:
    return StreamView(sid, tuple(prefer), tuple(allow), None, since)


def test_prefer_first_then_rendezvous_and_only_usable_nodes():
    fleet = {**nodes("rec-01", "rec-02", "rec-03"), **nodes("rec-04", ready=False),
             **nodes("rec-05", owned=3, capacity=3)}
    order = candidates(unowned("cam1", prefer=["rec-03", "rec-04", "gone"]), fleet)
    assert order[0] == "rec-03" and sorted(order) == ["rec-01", "rec-02", "rec-03"]
    rest = order[1:]
    assert rest == sorted(rest, key=lambda n: -score(n, "cam1"))
    assert candidates(unowned("cam1", allow=["rec-02"]), fleet) == ["rec-02"]


@given(st.lists(st.sampled_from(NAMES), unique=True), st.lists(st.sampled_from(NAMES), unique=True),
       st.sets(st.sampled_from(NAMES)), st.text(min_size=1, max_size=8))
def test_candidates_are_usable_unique_and_deterministic(prefer, allow, ready, sid):
    fleet = {n: NodeView(n, n in ready, 0, 4, 0.0) for n in NAMES}
    s = unowned(sid, prefer, allow)
    order = candidates(s, fleet)
    assert len(order) == len(set(order)) and all(n in ready and (not allow or n in allow) for n in order)
    assert order == candidates(s, dict(reversed(list(fleet.items()))))  # every node computes the same


def test_removing_a_node_moves_only_its_streams_and_spread_is_even():
    ids = [f"cam{i}" for i in range(500)]
    five = nodes(*NAMES)
    first = {sid: candidates(unowned(sid), five)[0] for sid in ids}
    four = nodes(*NAMES[:-1])
    after = {sid: candidates(unowned(sid), four)[0] for sid in ids}
    moved = {sid for sid in ids if first[sid] != after[sid]}
    assert moved == {sid for sid in ids if first[sid] == "rec-05"}
    three = nodes(*NAMES[:3])
    counts = [sum(candidates(unowned(sid), three)[0] == n for sid in ids) for n in NAMES[:3]]
    assert all(abs(c - 500 / 3) <= 0.15 * 500 / 3 for c in counts), counts


def test_claims_wait_their_step_and_respect_capacity_and_the_round_cap():
    fleet = nodes("rec-01", "rec-02")
    s = unowned("cam1", prefer=["rec-01", "rec-02"], since=10.0)
    assert plan_claims("rec-01", [s], fleet, 10.0, my_owned=0, my_capacity=5) == ["cam1"]
    assert plan_claims("rec-02", [s], fleet, 10.2, my_owned=0, my_capacity=5, step=0.5) == []
    assert plan_claims("rec-02", [s], fleet, 10.5, my_owned=0, my_capacity=5, step=0.5) == ["cam1"]
    many = [unowned(f"cam{i}", prefer=["rec-01"], since=float(i)) for i in range(20)]
    assert plan_claims("rec-01", many, fleet, 100.0, my_owned=0, my_capacity=50, max_starts=8) == \
        [f"cam{i}" for i in range(8)]  # the longest unowned first
    assert len(plan_claims("rec-01", many, fleet, 100.0, my_owned=47, my_capacity=50)) == 3
    assert plan_claims("rec-01", many, fleet, 100.0, my_owned=50, my_capacity=50) == []
    owned = StreamView("x", (), (), "rec-02", None)
    assert plan_claims("rec-01", [owned], fleet, 100.0, my_owned=0, my_capacity=5) == []


def test_handback_after_the_hold_down_and_within_the_target_capacity():
    streams = [StreamView(f"cam{i}", ("rec-01", "rec-02"), (), "rec-02", None) for i in range(3)]
    back = {**nodes("rec-02"), "rec-01": NodeView("rec-01", True, 0, 2, 100.0)}
    assert plan_handback("rec-02", streams, back, 120.0, hold_down=30) == []
    assert plan_handback("rec-02", streams, back, 130.0, hold_down=30) == [("cam0", "rec-01"), ("cam1", "rec-01")]
    not_ready = {**back, "rec-01": NodeView("rec-01", False, 0, 2, 100.0)}
    assert plan_handback("rec-02", streams, not_ready, 500.0) == []
    # A node not in the prefer list yields to any preferred node.
    elsewhere = [StreamView("cam9", ("rec-01",), (), "rec-03", None)]
    assert plan_handback("rec-03", elsewhere, {**back, **nodes("rec-03")}, 500.0) == [("cam9", "rec-01")]
    # The most preferred node never hands back.
    mine = [StreamView("cam8", ("rec-01", "rec-02"), (), "rec-01", None)]
    assert plan_handback("rec-01", mine, {**back, **nodes("rec-02")}, 500.0) == []


def test_a_node_that_joined_late_gets_its_rendezvous_streams_after_the_hold_down():
    """A fleet started one host at a time (or after a rolling restart) ends up spread as
    rendezvous says: each stream goes to the node ahead of its owner, nothing else moves."""
    ids = [f"cam{i}" for i in range(60)]
    fleet = {**nodes("rec-01"), "rec-02": NodeView("rec-02", True, 0, 100, 100.0)}
    owned = [StreamView(sid, (), (), "rec-01", None) for sid in ids]
    assert plan_handback("rec-01", owned, fleet, 110.0, hold_down=30) == []
    moves = plan_handback("rec-01", owned, fleet, 130.0, hold_down=30, max_offers=100)
    ranked = {sid: candidates(unowned(sid), fleet) for sid in ids}
    assert moves == [(sid, "rec-02") for sid in ids if ranked[sid][0] == "rec-02"]
    assert 15 < len(moves) < 45
    assert len(plan_handback("rec-01", owned, fleet, 130.0, hold_down=30, max_offers=8)) == 8
    assert plan_handback("rec-01", owned, fleet, 130.0, hold_down=30, max_offers=0) == []
    # The first node ahead that has room; none when the only one ahead is full.
    three = {**fleet, **nodes("rec-03")}
    behind = [sid for sid in ids if candidates(unowned(sid), three)[-1] == "rec-01"]
    top3 = next(sid for sid in behind if candidates(unowned(sid), three)[0] == "rec-03")
    s = [StreamView(top3, (), (), "rec-01", None)]
    assert plan_handback("rec-01", s, three, 500.0) == [(top3, "rec-03")]
    assert plan_handback("rec-01", s, {**three, **nodes("rec-03", owned=5, capacity=5)}, 500.0) == [(top3, "rec-02")]


def test_a_stream_no_longer_allowed_here_goes_to_an_allowed_node():
    s = StreamView("cam1", (), ("rec-02",), "rec-01", None)
    assert plan_handback("rec-01", [s], nodes("rec-01", "rec-02", "rec-03"), 500.0) == [("cam1", "rec-02")]
    assert plan_handback("rec-01", [s], nodes("rec-01", "rec-03"), 500.0) == []


def test_a_node_behind_waits_for_the_start_window_of_a_node_ahead():
    """Issue 16 item 14b: at a cold start, a node ahead still in its start window keeps its turn."""
    fleet = {"rec-01": NodeView("rec-01", True, 0, 100, 0.0, settles_at=6.0), **nodes("rec-02")}
    s = unowned("cam1", prefer=["rec-01"], since=0.0)
    assert plan_claims("rec-02", [s], fleet, 5.0, my_owned=0, my_capacity=10, step=0.5) == []
    assert plan_claims("rec-02", [s], fleet, 6.4, my_owned=0, my_capacity=10, step=0.5) == []
    assert plan_claims("rec-02", [s], fleet, 6.5, my_owned=0, my_capacity=10, step=0.5) == ["cam1"]
    assert plan_claims("rec-01", [s], fleet, 0.0, my_owned=0, my_capacity=10, step=0.5) == ["cam1"]
