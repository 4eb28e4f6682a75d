"""The retention keys of ``streams.yaml``, checked for ``validate.py``.

``recordings: {sweep_interval, probe_interval, min_free, min_free_hysteresis, orphan_retention}``
and per stream ``recording.max_size``.  Like every check in the schema, a
function returns None after reporting an error through the validator.
"""
from __future__ import annotations

import re
from typing import Any

from agent.config.model import RecordingsConfig, SpaceAmount
from agent.config.units import parse_size

RECORDINGS_KEYS = frozenset({"root", "sweep_interval", "probe_interval", "min_free", "min_free_hysteresis",
                             "orphan_retention"})
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def space_amount(v: Any, keypath: tuple, value: Any) -> SpaceAmount | None:
    """``10%`` (of the filesystem, 0-90) or a size like ``20GiB``."""
    match = _PERCENT.match(value) if isinstance(value, str) and len(value) < 32 else None
    if match:
        percent = float(match.group(1))
        if percent <= 90:
            return SpaceAmount(percent=percent)
    else:
        try:
            return SpaceAmount(bytes=parse_size(value))
        except (ValueError, TypeError):
            pass
    v.error(keypath, f"expected a percentage from 0% to 90% or a size like 20GiB, got {v.show(value)}")
    return None


def max_size_check(v: Any, keypath: tuple, value: Any) -> int | None:
    """A stream's cap in bytes; ``null`` is no cap (0 here, as None means an error)."""
    if value is None:
        return 0
    try:
        size = parse_size(value)
    except (ValueError, TypeError):
        size = -1
    if size <= 0:
        v.error(keypath, f"expected a size like 50GiB (or null for no cap), got {v.show(value)}")
        return None
    return size


def recordings_section(v: Any, rec: dict) -> RecordingsConfig:
    """The host-wide retention settings of the ``recordings`` section (defaults filled in)."""
    key, d = ("recordings",), RecordingsConfig()
    sweep = v.duration(key + ("sweep_interval",), rec.get("sweep_interval", d.sweep_interval),
                       positive=True, lo=10, hi=86400)
    probe = v.duration(key + ("probe_interval",), rec.get("probe_interval", d.probe_interval),
                       positive=True, lo=1, hi=3600)
    orphan = v.duration(key + ("orphan_retention",), rec.get("orphan_retention", d.orphan_retention))
    floor = space_amount(v, key + ("min_free",), rec["min_free"]) if "min_free" in rec else d.min_free
    hyst = (space_amount(v, key + ("min_free_hysteresis",), rec["min_free_hysteresis"])
            if "min_free_hysteresis" in rec else d.min_free_hysteresis)
    return RecordingsConfig(sweep_interval=d.sweep_interval if sweep is None else sweep,
                            probe_interval=d.probe_interval if probe is None else probe,
                            min_free=floor or d.min_free, min_free_hysteresis=hyst or d.min_free_hysteresis,
                            orphan_retention=d.orphan_retention if orphan is None else orphan)
