"""The console's ``start``/``end`` query parameters: ISO 8601 with a zone, or unix seconds.

A time without a zone (``2026-11-28T14:02``) is refused rather than guessed: the node's
zone, the browser's and UTC differ, and a clip of the wrong hour looks right.  Errors
name the parameter (the route answers 400 ``{"error", "parameter"}``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

#: A plain ASCII decimal: no sign, exponent, underscores or other scripts' digits.
_UNIX = re.compile(r"[0-9]{1,12}(\.[0-9]{1,12})?")
#: An ISO time whose offset's "+" arrived as a space (form decoding of a query).
_PLUS_AS_SPACE = re.compile(r"[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)? [0-9]{2}(:?[0-9]{2})?$")
#: Times before 2000 or after 2100 are a typo, not a recording.
EARLIEST, LATEST = 946684800.0, 4102444800.0
#: The default range: the last 24 hours.
DEFAULT_SPAN = 86400.0
#: The longest range one request may ask (a month).
MAX_SPAN = 31 * 86400.0


class BadParameter(ValueError):
    """A parameter the route cannot use; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


def parse_time(text: str, parameter: str) -> float:
    """Unix seconds of ``text`` (``1764338520``, ``1764338520.5``, ``2026-11-28T14:02:00Z``, ``...+01:00``)."""
    if _UNIX.fullmatch(text):
        value = float(text)
    else:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            if _PLUS_AS_SPACE.search(text):  # curl '...?start=2026-11-28T14:02:00+01:00' sends a space
                raise BadParameter(parameter, f"{text[:40]!r}: a '+' in a URL's query reads as a space; "
                                              "write the offset's + as %2B") from None
            raise BadParameter(parameter, f"{text[:40]!r} is neither ISO 8601 (2026-11-28T14:02:00Z) "
                                          "nor unix seconds") from None
        if when.tzinfo is None:
            raise BadParameter(parameter, f"{text[:40]!r} has no time zone: add Z (UTC) or an offset like +01:00")
        value = when.timestamp()
    if not EARLIEST <= value <= LATEST:
        raise BadParameter(parameter, f"{text[:40]!r} is outside 2000-2100")
    return value


def time_range(query: Mapping[str, str], now: float, *, default_span: float = DEFAULT_SPAN,
               max_span: float = MAX_SPAN, required: bool = False) -> tuple[float, float]:
    """``(start, end)`` from the query; without them (unless ``required``) the last ``default_span``."""
    for name in query:
        if name not in ("start", "end"):
            raise BadParameter(name, "unknown parameter; use start and end")
    raw = {name: query.getall(name) if hasattr(query, "getall") else [query[name]]  # type: ignore[attr-defined]
           for name in ("start", "end") if name in query}
    for name, values in raw.items():
        if len(values) > 1:
            raise BadParameter(name, "given more than once")
    if required:
        for name in ("start", "end"):
            if name not in raw:
                raise BadParameter(name, "required (ISO 8601 or unix seconds)")
    end = parse_time(raw["end"][0], "end") if "end" in raw else now
    start = parse_time(raw["start"][0], "start") if "start" in raw else end - default_span
    if end <= start:
        raise BadParameter("end", "must be after start")
    if end - start > max_span:
        raise BadParameter("end", f"the range is {(end - start) / 86400:.1f} days; at most {max_span / 86400:g}")
    return start, end
