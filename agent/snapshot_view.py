"""How readers (the exporter, ``vasctl status``) present the agent's snapshot.

Two rules, one place, so every route, metric and table tells the same truth:

- A snapshot whose shape is wrong (garbage bytes, wrong JSON types) is
  *unreadable*: readers answer "agent state unreadable", never a 404 for a
  stream the agent runs or a 500 from a type error.
- A snapshot older than the stale limit is the agent's *last word*, not the
  present: the agent is dead or hung, so nobody watches its streams and its
  PIDs may be gone.  Each stream and the SFU are shown with state ``unknown``,
  ``stale: true``, the snapshot's age and what was last known; no PID (so no
  uptime grows and no psutil sample is taken of a PID that may be reused).
"""
from __future__ import annotations

from typing import Any

UNKNOWN = "unknown"
_NUM = (int, float)
_OPT_DICT = (dict, type(None))
_TOP = {"agent": (dict,), "streams": (list,), "config": _OPT_DICT, "sfu": _OPT_DICT, "consumers": _OPT_DICT,
        "fleet": _OPT_DICT, "recordings": _OPT_DICT}
_STREAM = {"id": (str,), "state": (str,), "enabled": (bool,), "pid": (int, type(None)),
           "pid_started_at": (*_NUM, type(None)), "restarts": (int,), "restart_reasons": (dict,),
           "since": _NUM, "progress": _OPT_DICT, "producer": _OPT_DICT, "recording": _OPT_DICT, "video": _OPT_DICT,
           "last_error": (list, type(None)), "last_exit": _OPT_DICT, "next_restart_at": (*_NUM, type(None))}
_NESTED_NUMBERS = ("progress", "producer")


def shape_error(data: Any) -> str | None:
    """Why ``data`` is not a snapshot the readers can present, or None when it is."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    for key, types in _TOP.items():
        if (key in data and not isinstance(data[key], types)) or (key in ("agent", "streams") and key not in data):
            return f"'{key}' is {type(data.get(key)).__name__}"
    for i, s in enumerate(data["streams"]):
        problem = _stream_error(s)
        if problem:
            return f"streams[{i}]: {problem}"
    for key in ("agent", "sfu", "consumers", "fleet", "config"):
        problem = _values_error(data.get(key) or {}, key)
        if problem:
            return problem
    return None


#: ``_STREAM`` as exact classes: JSON parsers make no subclasses (bool is its own class here).
_STREAM_CLASSES = {key: frozenset(types) for key, types in _STREAM.items()}


def _stream_plainly_fine(s: Any) -> bool:
    """No problem in the stream's own fields for certain, in one pass over its keys (500
    streams per snapshot: the full check's pass over ``_STREAM`` cost as much as the parse).
    False means "look closer", as :func:`_plainly_fine`."""
    if s.__class__ is not dict or "id" not in s or "state" not in s:
        return False
    allowed = _STREAM_CLASSES.get
    for key, value in s.items():
        classes = allowed(key)
        if classes is not None and value.__class__ not in classes:
            return False
    reasons, errors = s.get("restart_reasons"), s.get("last_error")
    return ((not reasons or all(n.__class__ is int for n in reasons.values()))
            and (not errors or all(line.__class__ is str for line in errors)))


def _stream_error(s: Any) -> str | None:
    if _stream_plainly_fine(s):
        return _sections_error(s)
    if not isinstance(s, dict):
        return f"expected an object, got {type(s).__name__}"
    for key, types in _STREAM.items():
        if key in s and (not isinstance(s[key], types) or isinstance(s[key], bool) and bool not in types):
            return f"'{key}' is {type(s[key]).__name__}"
        if key in ("id", "state") and key not in s:
            return f"no '{key}'"
    if not all(isinstance(v, int) for v in s.get("restart_reasons", {}).values()):
        return "'restart_reasons' holds a non-integer"
    if not all(isinstance(line, str) for line in s.get("last_error") or []):
        return "'last_error' holds a non-string"
    return _sections_error(s)


def _sections_error(s: dict[str, Any]) -> str | None:
    """The stream's progress, producer and recording sections."""
    progress, producer, recording = s.get("progress"), s.get("producer"), s.get("recording")
    if ((not progress or _plainly_fine(progress)) and (not producer or _plainly_fine(producer))
            and (not recording or _plainly_fine(recording) and _counts_plainly_fine(recording.get("deleted")))):
        return None
    for key in _NESTED_NUMBERS:
        problem = _values_error(s.get(key) or {}, key)
        if problem:
            return problem
    problem = _values_error(s.get("recording") or {}, "recording")
    deleted = (s.get("recording") or {}).get("deleted") or {}
    if not problem and not all(isinstance(c, dict) and all(isinstance(n, _NUM) for n in c.values())
                               for c in deleted.values()):
        return "recording.deleted holds a non-count"
    return problem


def _counts_plainly_fine(deleted: dict[str, Any] | None) -> bool:
    """``recording.deleted`` maps reasons to objects of numbers, for certain (False: look closer)."""
    for counts in (deleted or {}).values():
        if counts.__class__ is not dict:
            return False
        for n in counts.values():
            if n.__class__ is not int and n.__class__ is not float:
                return False
    return True


_NUMBERS = ("fps", "frames", "bytes", "out_time_seconds", "last_progress_at", "since", "packets",
            "retention_seconds", "segment_duration_seconds", "segment_count", "total_bytes", "oldest_segment_at",
            "newest_segment_at",
            "generation", "restarts", "started_at", "pid")
_OBJECTS = ("restart_reasons", "deleted", "per_stream", "ended", "owners", "nodes", "last_reload", "last_exit",
            "takeovers")
#: Keys whose items or histograms are checked too: a section holding one takes the full check.
_DEEP_KEYS = frozenset(("event_loop_lag_seconds", "session_duration_seconds", "lease_renewal_seconds", "active",
                        "owners", "nodes", "per_stream", "restart_reasons", "takeovers"))
_NONE = type(None)
#: The classes each known key may hold in the one-pass judgement (none for a deep key: any value
#: of one sends the section to the full check).
_SECTION_CLASSES = {**dict.fromkeys(_NUMBERS, frozenset((int, float, _NONE))),
                    **dict.fromkeys(_OBJECTS, frozenset((dict, _NONE))), **dict.fromkeys(_DEEP_KEYS, frozenset())}


def _plainly_fine(section: dict[str, Any]) -> bool:
    """No problem for certain, judged in one pass over the keys the section has (three
    sections per stream: the check must not cost more than the parse).  False means "look
    closer": the full check then finds the problem and names the first in its order."""
    allowed = _SECTION_CLASSES.get
    for key, value in section.items():
        classes = allowed(key)
        if classes is not None and value.__class__ not in classes:  # bool, str, ... or a deep key
            return False
    return True


def _values_error(section: dict[str, Any], name: str) -> str | None:
    """Known number-or-null and object fields of a section have those types."""
    if _plainly_fine(section):
        return None
    numbers, objects = _NUMBERS, _OBJECTS
    for key in numbers:
        value = section.get(key)
        if value is not None and (not isinstance(value, _NUM) or isinstance(value, bool)):
            return f"{name}.{key} is {type(value).__name__}"
    for key in objects:
        if section.get(key) is not None and not isinstance(section[key], dict):
            return f"{name}.{key} is {type(section[key]).__name__}"
    for key in ("event_loop_lag_seconds", "session_duration_seconds", "lease_renewal_seconds"):
        if section.get(key) is not None and not _histogram(section[key]):
            return f"{name}.{key} is not a histogram"
    return _items_error(section, name)


def _histogram(h: Any) -> bool:
    return (isinstance(h, dict) and isinstance(h.get("sum"), _NUM) and isinstance(h.get("buckets"), list)
            and all(isinstance(b, list) and len(b) == 2 and isinstance(b[1], _NUM)
                    and (isinstance(b[0], _NUM) or b[0] == "+Inf") for b in h["buckets"]))  # the bound: a float


def _items_error(section: dict[str, Any], name: str) -> str | None:
    """Lists and maps whose items the readers index into."""
    active = section.get("active", []) if name == "consumers" else []
    if not isinstance(active, list) or not all(isinstance(c, dict) and isinstance(c.get("consumer_id"), str)
                                               for c in active):
        return "consumers.active is not a list of sessions"
    for key in ("owners", "nodes") if name == "fleet" else ():
        if not all(isinstance(v, dict) for v in (section.get(key) or {}).values()):
            return f"fleet.{key} holds a non-object"
    for key in ("per_stream", "restart_reasons", "takeovers"):
        if not all(isinstance(v, _NUM) for v in (section.get(key) or {}).values()):
            return f"{name}.{key} holds a non-number"
    return None


def mark_stale(data: dict[str, Any], age: float) -> dict[str, Any]:
    """A copy of ``data`` that claims nothing about the present (see the module doc)."""
    age = round(age, 3)
    streams = [_stale_stream(s, age) for s in data.get("streams") or []]
    out = {**data, "streams": streams}
    if data.get("sfu"):
        sfu = data["sfu"]
        out["sfu"] = {**sfu, "state": UNKNOWN, "last_known_state": sfu.get("state"), "stale": True,
                      "snapshot_age_seconds": age, "pid": None, "last_known_pid": sfu.get("pid"),
                      "pid_started_at": None}
    return out


def _stale_stream(s: dict[str, Any], age: float) -> dict[str, Any]:
    producer = s.get("producer")
    return {**s, "state": UNKNOWN, "last_known_state": s.get("state"), "stale": True, "snapshot_age_seconds": age,
            "pid": None, "last_known_pid": s.get("pid"), "pid_started_at": None,
            "producer": None if producer is None else {**producer, "confirmed": False, "stale": True}}
