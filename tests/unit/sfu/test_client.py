"""The SFU contract's answers, checked before the agent uses them (pure)."""
from __future__ import annotations

import pytest

from agent.sfu.client import SfuError, parse_address, parse_consumers, parse_producers

GOOD = {"producer_id": "p1", "stream_id": "cam1", "ssrc": 7, "payload_type": 96, "packets": 10,
        "bytes": 1200, "score": 10, "rtp_host": "127.0.0.1", "rtp_port": 40000}


def test_source_port_and_profile_are_optional():
    """An SFU that does not echo them (or says null: nothing received yet) is fine."""
    [bare, null, full] = parse_producers([GOOD, {**GOOD, "source_port": None, "profile_level_id": None, "score": None},
                                          {**GOOD, "source_port": 41000, "profile_level_id": "64001F"}])
    assert (bare.source_port, bare.profile_level_id) == (null.source_port, null.profile_level_id) == (None, None)
    assert null.score is None
    assert (full.source_port, full.profile_level_id) == (41000, "64001f")
    [odd] = parse_producers([{**GOOD, "profile_level_id": "High"}])
    assert odd.profile_level_id is None  # not a profile-level-id: as if not echoed


def test_good_answers_parse():
    assert parse_address({"producer_id": "p1", "rtp_host": "::1", "rtp_port": 5004}).rtp_port == 5004
    [p] = parse_producers([GOOD])
    assert (p.stream_id, p.ssrc, p.packets, p.score) == ("cam1", 7, 10, 10.0)
    [c] = parse_consumers([{"consumer_id": "c1", "stream_id": "cam1", "client_id": "x", "created_at": 1.5}])
    assert c.created_at == 1.5


@pytest.mark.parametrize("body,message", [
    ({"producers": []}, "GET /producers: expected a list of objects"),
    ([1], "GET /producers: expected a list of objects"),
    ([{**GOOD, "packets": "10"}], "GET /producers: item 0: 'packets' must be an integer"),
    ([{**GOOD, "packets": -1}], "GET /producers: item 0: 'packets' out of range"),
    ([{**GOOD, "packets": True}], "GET /producers: item 0: 'packets' must be an integer"),
    ([GOOD, {**GOOD, "rtp_port": 70000}], "GET /producers: item 1: 'rtp_port' out of range"),
    ([{k: v for k, v in GOOD.items() if k != "stream_id"}], "GET /producers: item 0: 'stream_id' must be a string"),
    ([{**GOOD, "source_port": 0}], "GET /producers: item 0: 'source_port' out of range"),
    ([{**GOOD, "source_port": "41000"}], "GET /producers: item 0: 'source_port' must be an integer"),
])
def test_wrong_shapes_name_the_call_item_and_key(body, message):
    with pytest.raises(SfuError) as info:
        parse_producers(body)
    assert str(info.value).startswith(message)


def test_a_producer_address_needs_every_field():
    for bad in ([], {"producer_id": "p1", "rtp_host": "h"}, {"producer_id": 1, "rtp_host": "h", "rtp_port": 1}):
        with pytest.raises(SfuError, match="^POST /producers: "):
            parse_address(bad)
