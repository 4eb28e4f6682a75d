"""Hostile start/end values (issue 20, hostile review): what the console's time parser refuses,
and that each refusal says what to do (exporter/timerange.py, pure)."""
from __future__ import annotations

import pytest

from exporter.timerange import BadParameter, parse_time, time_range

REFUSED = ["2026-11-28T23:59:60Z", "99999-01-01T00:00:00Z", "-1", "NaN", "nan", "inf", "1e309", "1764338520.",
           "\uff11\uff17\uff16\uff14\uff13\uff13\uff18\uff15\uff12\uff10", "2026-11-28T14:02:00+25:00",
           "2026-11-28", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "999999999999",
           "4102444800.5", "2026-11-28T24:00:00Z", "", " "]


@pytest.mark.parametrize("text", REFUSED)
def test_hostile_times_are_refused_naming_the_parameter(text):
    with pytest.raises(BadParameter) as err:
        parse_time(text, "start")
    assert err.value.parameter == "start"


def test_an_offset_whose_plus_arrived_as_a_space_says_how_to_send_it():
    """curl 'http://node/...?start=2026-11-28T14:02:00+01:00': the query decodes + as a space."""
    for text in ("2026-11-28T14:02:00 01:00", "2026-11-28T14:02 0100", "2026-11-28T14:02:00.5 01"):
        with pytest.raises(BadParameter, match="%2B"):
            parse_time(text, "end")
    assert parse_time("2026-11-28T14:02:00+01:00", "end") == parse_time("2026-11-28T13:02:00Z", "end")


def test_a_month_is_the_longest_range_and_repeats_are_refused():
    start, month = 1_764_000_000, 31 * 86400
    with pytest.raises(BadParameter, match="at most 31"):
        time_range({"start": str(start), "end": str(start + month + 1)}, 1.77e9)
    assert time_range({"start": str(start), "end": str(start + month)}, 1.77e9) == (start, start + month)
