"""The stream state machine: one table of legal moves."""
from __future__ import annotations

import itertools

import pytest

from agent.supervise.states import TRANSITIONS, IllegalTransition, StreamState, check_transition

S = StreamState
LEGAL = {
    (S.INITIALIZING, S.READY), (S.INITIALIZING, S.ERROR), (S.INITIALIZING, S.STOPPED),
    (S.READY, S.LIVE), (S.READY, S.ERROR), (S.READY, S.STOPPED),
    (S.LIVE, S.READY), (S.LIVE, S.ERROR), (S.LIVE, S.STOPPED),
    (S.ERROR, S.INITIALIZING), (S.ERROR, S.STOPPED),
    (S.STOPPED, S.INITIALIZING),
}
ALL_PAIRS = list(itertools.product(StreamState, repeat=2))


def test_values_are_what_the_snapshot_shows():
    assert [s.value for s in StreamState] == ["initializing", "ready", "live", "error", "stopped"]
    assert S("live") is S.LIVE and S.LIVE == "live"


def test_table_covers_every_state():
    assert set(TRANSITIONS) == set(StreamState)


def test_table_is_exactly_the_documented_moves():
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == LEGAL


@pytest.mark.parametrize(("old", "new"), sorted(LEGAL))
def test_legal_move_is_accepted(old, new):
    check_transition(old, new)


@pytest.mark.parametrize(("old", "new"), sorted(set(ALL_PAIRS) - LEGAL))
def test_illegal_move_raises(old, new):
    with pytest.raises(IllegalTransition) as info:
        check_transition(old, new)
    assert str(info.value) == f"illegal stream state change {old.value} -> {new.value}"


@pytest.mark.parametrize(("old", "new"), [(S.STOPPED, S.LIVE), (S.ERROR, S.LIVE),
                                          (S.INITIALIZING, S.LIVE), (S.ERROR, S.READY),
                                          (S.STOPPED, S.ERROR), (S.LIVE, S.INITIALIZING)])
def test_notable_illegal_moves(old, new):
    with pytest.raises(IllegalTransition):
        check_transition(old, new)


def test_no_state_moves_to_itself():
    for state in StreamState:
        with pytest.raises(IllegalTransition):
            check_transition(state, state)


def test_every_running_state_can_stop_and_fail():
    for state in (S.INITIALIZING, S.READY, S.LIVE, S.ERROR):
        assert S.STOPPED in TRANSITIONS[state]
    for state in (S.INITIALIZING, S.READY, S.LIVE):
        assert S.ERROR in TRANSITIONS[state]


def test_every_state_can_reach_stopped_and_live():
    def reachable(start: StreamState) -> set[StreamState]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    for state in StreamState:
        assert {S.STOPPED, S.LIVE} <= reachable(state)


def test_error_retries_through_initializing():
    assert TRANSITIONS[S.ERROR] == {S.INITIALIZING, S.STOPPED}


def test_illegal_transition_is_a_bug_not_an_operator_error():
    assert issubclass(IllegalTransition, RuntimeError)
