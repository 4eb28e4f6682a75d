"""A manual cleanup's parameters, checked alike by the agent's control route, the
exporter's cleanup endpoints and vasctl.

A cleanup deletes footage for good, so a request it does not fully understand is
refused, never half applied: an unknown or repeated parameter, a ``dry_run`` that
is not a clear yes or no, or a ``retention_days`` below one hour (``1e-300`` would
otherwise delete every segment older than a few seconds).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: The shortest age a manual cleanup may cut at: one hour, in days.
MIN_RETENTION_DAYS = 1 / 24
MAX_RETENTION_DAYS = 36500.0
_YES, _NO = ("1", "true", "yes"), ("0", "false", "no")
#: Plain ASCII decimals only: float() would also take "7_0", "١٤", " 7 ", "1e1" and "inf".
DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)


class BadParameter(ValueError):
    """A cleanup parameter that is refused (``parameter`` names it)."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class CleanupParams:
    """A checked cleanup request."""

    stream: str | None = None
    dry_run: bool = False
    retention_days: float | None = None


def check_days(value: float) -> float:
    """``value`` when it is a number of days from one hour to 100 years, else BadParameter."""
    if not (math.isfinite(value) and MIN_RETENTION_DAYS <= value <= MAX_RETENTION_DAYS):
        raise BadParameter("retention_days", f"retention_days must be a number of days from "
                           f"{MIN_RETENTION_DAYS:.6f} (one hour) to {MAX_RETENTION_DAYS:g}, got {value!r}")
    return value


def parse_days(text: str) -> float:
    """A `retention_days` text: an ASCII decimal number of days in range, else BadParameter."""
    try:
        if not DECIMAL.fullmatch(text):
            raise ValueError(text)
        value = float(text)
    except ValueError:
        raise BadParameter("retention_days", f"retention_days must be a number of days from "
                           f"{MIN_RETENTION_DAYS:.6f} (one hour) to {MAX_RETENTION_DAYS:g}, got {text!r}") from None
    return check_days(value)


def _flag(name: str, text: str) -> bool:
    if text.lower() in _YES:
        return True
    if text.lower() in _NO:
        return False
    raise BadParameter(name, f"{name} must be 1/true/yes or 0/false/no, got {text!r}")


def parse(query: Mapping[str, str], *, allowed: Iterable[str]) -> CleanupParams:
    """The request's parameters; BadParameter for an unknown, repeated or invalid one.

    ``query``: a dict, or aiohttp's ``MultiDict`` (whose ``getall`` shows a repeated name).
    """
    allowed = set(allowed)
    for name in dict.fromkeys(query.keys()):
        if name not in allowed:
            raise BadParameter(name, f"unknown parameter {name!r} (allowed: {', '.join(sorted(allowed))})")
        if len(getattr(query, "getall", lambda n: [n])(name)) > 1:
            raise BadParameter(name, f"parameter {name!r} given more than once")
    days = query.get("retention_days")
    return CleanupParams(stream=query.get("stream"), dry_run=_flag("dry_run", query.get("dry_run", "0")),
                         retention_days=None if days is None else parse_days(days))
