"""How readers present the snapshot (issue 16, items 15, 17, 18): pure functions."""
from __future__ import annotations

import pytest

from agent.client import too_late
from agent.snapshot_view import mark_stale, shape_error
from exporter.control import kind_of

GOOD = {"agent": {"pid": 1, "status": "running", "started_at": 1.0}, "config": {"last_reload": None},
        "streams": [{"id": "cam1", "state": "live", "enabled": True, "pid": 42, "pid_started_at": 100.0,
                     "restarts": 0, "restart_reasons": {}, "progress": {"fps": 25.0, "frames": 10},
                     "producer": {"id": "p", "confirmed": True, "packets": 5}, "last_error": [],
                     "recording": {"enabled": True, "deleted": {"age": {"segments": 1, "bytes": 2}}}}],
        "sfu": {"state": "up", "pid": 7, "restart_reasons": {"exit": 1}},
        "consumers": {"active": [{"consumer_id": "c1"}], "per_stream": {"cam1": 1}}}


def test_a_good_snapshot_has_no_shape_error():
    assert shape_error(GOOD) is None


@pytest.mark.parametrize("change,where", [
    (lambda d: d.pop("streams"), "'streams'"),
    (lambda d: d.update(agent="x"), "'agent'"),
    (lambda d: d["streams"].append(3), "streams[1]"),
    (lambda d: d["streams"][0].pop("id"), "no 'id'"),
    (lambda d: d["streams"][0].update(enabled=1), "'enabled'"),
    (lambda d: d["streams"][0].update(restarts=True), "'restarts'"),
    (lambda d: d["streams"][0].update(pid=1.5), "'pid'"),
    (lambda d: d["streams"][0]["progress"].update(fps="25"), "progress.fps"),
    (lambda d: d["streams"][0]["recording"].update(deleted={"age": 3}), "recording.deleted"),
    (lambda d: d["sfu"].update(restart_reasons={"exit": "1"}), "sfu.restart_reasons"),
    (lambda d: d["consumers"].update(active=[{"id": 1}]), "consumers.active"),
    (lambda d: d["agent"].update(started_at="yesterday"), "agent.started_at"),
    (lambda d: d["agent"].update(event_loop_lag_seconds={"sum": 1, "buckets": [["x", 1]]}), "agent.event_loop_lag"),
    (lambda d: d["consumers"].update(session_duration_seconds={"sum": 1, "buckets": [[None, 1]]}), "consumers.session"),
])
def test_each_wrong_type_is_named(change, where):
    import copy
    data = copy.deepcopy(GOOD)
    change(data)
    assert where in (shape_error(data) or ""), shape_error(data)


@pytest.mark.parametrize("progress,message", [
    ({"frames": True}, "progress.frames is bool"),
    ({"last_progress_at": "x", "fps": "y"}, "progress.fps is str"),  # the check's order, not the dict's
    ({"fps": 1, "deleted": [1]}, "progress.deleted is list"),
    ({"fps": 1, "restart_reasons": {"exit": "1"}}, "progress.restart_reasons holds a non-number"),
    ({"fps": 1, "session_duration_seconds": {"sum": 1}}, "progress.session_duration_seconds is not a histogram"),
])
def test_the_quick_pass_leaves_the_full_check_to_name_the_problem(progress, message):
    """Issue 21: a section is first judged in one pass over its keys (the check cost twice the
    parse at 500 streams); a problem is still named as the full check names it."""
    import copy
    data = copy.deepcopy(GOOD)
    data["streams"][0]["progress"] = progress
    assert shape_error(data) == f"streams[0]: {message}"


_VALUES = [True, 7, 1.5, "x", ["a"], {}, None]


@pytest.mark.parametrize("value", _VALUES, ids=repr)
@pytest.mark.parametrize("key", ["id", "state", "enabled", "pid", "pid_started_at", "restarts", "restart_reasons",
                                 "since", "progress", "producer", "recording", "last_error", "next_restart_at"])
def test_the_one_pass_stream_judgement_agrees_with_the_field_types(key, value):
    """Issue 21: each stream is first judged in one pass over its keys by exact class; every
    value a field's types refuse is still named, and every value they take still passes."""
    import copy

    from agent.snapshot_view import _STREAM
    data = copy.deepcopy(GOOD)
    data["streams"][0][key] = value
    types = _STREAM[key]
    refused = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
    problem = shape_error(data)
    if refused:
        assert problem == f"streams[0]: '{key}' is {type(value).__name__}"
    elif key not in ("last_error",) or not value or all(isinstance(v, str) for v in value):
        assert problem is None, problem


@pytest.mark.parametrize("section,key", [("progress", "frames"), ("producer", "packets"), ("recording", "total_bytes"),
                                         ("producer", "restart_reasons"), ("recording", "deleted")])
@pytest.mark.parametrize("value", _VALUES, ids=repr)
def test_a_section_value_is_judged_the_same_by_both_passes(section, key, value):
    import copy
    data = copy.deepcopy(GOOD)
    data["streams"][0][section][key] = value
    problem = shape_error(data)
    number, obj = key in ("frames", "packets", "total_bytes"), key in ("restart_reasons", "deleted")
    wrong = ((number and value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))))
             or (obj and value is not None and not isinstance(value, dict)))
    assert (problem is not None) == wrong, problem
    if wrong:
        assert problem == f"streams[0]: {section}.{key} is {type(value).__name__}"


@pytest.mark.parametrize("counts,ok", [({"segments": 1, "bytes": 2.5}, True), ({"segments": True}, True),
                                       ({"segments": "1"}, False), (3, False), ([1], False)])
def test_deleted_counts_are_judged_the_same_by_both_passes(counts, ok):
    import copy
    data = copy.deepcopy(GOOD)
    data["streams"][0]["recording"]["deleted"] = {"age": counts}
    assert (shape_error(data) is None) == ok
    data["streams"][0]["restart_reasons"] = {"exit": True}  # a bool counts as an int, as json reads it
    assert (shape_error(data) is None) == ok


def test_stale_marks_every_stream_and_the_sfu_unknown_without_a_pid():
    out = mark_stale(GOOD, 12.3456)
    s = out["streams"][0]
    assert (s["state"], s["last_known_state"], s["stale"]) == ("unknown", "live", True)
    assert s["snapshot_age_seconds"] == 12.346
    assert (s["pid"], s["last_known_pid"], s["pid_started_at"]) == (None, 42, None)
    assert s["producer"]["confirmed"] is False and s["producer"]["stale"] is True
    assert out["sfu"]["state"] == "unknown" and out["sfu"]["last_known_state"] == "up" and out["sfu"]["pid"] is None
    assert GOOD["streams"][0]["state"] == "live" and GOOD["sfu"]["state"] == "up"  # the original is untouched


@pytest.mark.parametrize("header,now,late", [
    (None, 100.0, False), ("100.5", 100.0, False), ("99.9", 100.0, True),
    ("nan", 100.0, True), ("inf", 100.0, True), ("soon", 100.0, True),
])
def test_a_request_read_after_its_deadline_is_too_late(header, now, late):
    assert too_late(header, now) is late


def test_each_control_path_has_its_kind():
    assert kind_of("/consumers/c1/heartbeat") == "heartbeat"
    assert kind_of("/recordings/cleanup?stream=cam1") == "cleanup"
    assert kind_of("/streams/cam1/consumers/c1") == "consumer"
