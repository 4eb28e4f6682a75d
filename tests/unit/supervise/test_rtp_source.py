"""agent/supervise/rtp_source.py: RTP source ports kept clear of each other (real kernel sockets)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from agent.sfu.producers import Producer, _adopted
from agent.supervise.ffmpeg import RtpTarget
from agent.supervise.rtp_source import SEQ_JUMP, can_bind, clashes, next_seq, pick


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

    Without ``avoid``, 43 of 50 such runs had an overlapping pair:
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


def test_a_new_run_starts_its_sequence_ahead_of_where_the_last_one_ended():
    """Forward by SEQ_JUMP from the last run's start plus the packets mediasoup counted, across the wrap."""
    assert next_seq(1000, 500) == 1000 + 500 + SEQ_JUMP
    assert next_seq(65000, 1000) == (65000 + 1000 + SEQ_JUMP) % 65536
    assert 3000 <= SEQ_JUMP < 1 << 14  # past every receiver's gap window, far from ambiguous (half the space)
    assert all(0 <= next_seq(None, 0) < 65536 for _ in range(100))


def test_a_producer_hands_each_run_a_sequence_ahead_of_the_last():
    """Producer.next_seq keeps the last start and the count it was made at (a poll updates packets)."""
    producer = Producer("p1", RtpTarget("127.0.0.1", 40000, 1234, 96))
    first = producer.next_seq()
    producer.packets = 700  # counted by mediasoup during the first run
    assert producer.next_seq() == (first + 700 + SEQ_JUMP) % 65536
    second = producer.seq_start
    producer.packets = 750
    assert producer.next_seq() == (second + 50 + SEQ_JUMP) % 65536
