"""agent/rtp_source.py: RTP source ports kept clear of each other (real kernel sockets)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from agent.producers import _adopted
from agent.rtp_source import can_bind, clashes, pick


def ephemeral_range() -> range:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(low, high + 1)


def test_a_port_clashes_with_the_pair_of_another():
    assert clashes(5000, {5000}) and clashes(5000, {4999}) and clashes(5000, {5001})
    assert not clashes(5000, {4998, 5002}) and not clashes(5000, ())


def test_pick_never_returns_a_port_whose_pair_overlaps_one_to_avoid():
    """Every port the kernel can offer is taken by another producer: no port, rather than a shared one."""
    assert pick(avoid=set(ephemeral_range())) is None


def test_many_producers_get_disjoint_pairs():
    """200 picks, each avoiding the earlier ones (the agent's 200-stream case).

    Without ``avoid`` (before the fix), 43 of 50 such runs had an overlapping pair:
    both FFmpegs' ports are free until they spawn, and the kernel offers freed ports again.
    """
    taken: list[int] = []
    for _ in range(200):
        port = pick(avoid=taken)
        assert port is not None and can_bind(port)
        assert not clashes(port, taken)
        taken.append(port)


def test_an_adopted_producer_that_never_received_keeps_clear_of_the_other_producers():
    """The SFU reports no locked port (nothing received yet): the agent's own pick avoids the others'."""
    match = SimpleNamespace(producer_id="p1", rtp_host="127.0.0.1", rtp_port=40000, source_port=None,
                            packets=0, bytes=0, profile_level_id=None)
    producer = _adopted(match, 1234, 96, None, None, set(ephemeral_range()))
    assert producer.target.source_port is None  # no free pair clear of them: FFmpeg picks its own
    producer = _adopted(match, 1234, 96, None, None, {40000})
    assert producer.target.source_port is not None and not clashes(producer.target.source_port, {40000})
