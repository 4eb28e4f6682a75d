"""The local UDP port a stream's FFmpeg sends RTP from, kept for its producer's whole life.

A mediasoup PlainTransport with ``comedia: true`` locks onto the IP:port of
the first packet it receives and drops every other sender ("ignoring RTP
packet from unknown IP:port").  A restarted FFmpeg would send from a new
ephemeral port and be dropped, so the agent picks one free port when it makes
(or adopts) a producer and every FFmpeg run of that producer binds it
(``rtp://host:port?localrtpport=N``).  FFmpeg's rtp protocol also binds N+1
for its RTCP socket, and falls back to two random ports when N+1 is taken, so
both must be free.  Ports are checked on the wildcard address, where FFmpeg
binds them.

Ports are also kept apart from the other producers' (``avoid``): the kernel
hands out a freed ephemeral port again at random, and every producer's port is
free between FFmpeg runs (and before the first), so without it 200 streams had
an overlapping pair (N, N+1) in 43 of 50 trials; the second FFmpeg then fails
to bind ("bind failed: Address already in use") and its producer is re-made.
"""
from __future__ import annotations

import random
import socket
from collections.abc import Collection

#: How far ahead of where the last FFmpeg run ended a new run starts its RTP sequence: forward
#: (a WebRTC viewer's SRTP drops a sequence that goes back more than its replay window, until it
#: passes the old maximum), beyond receivers' windows for lost packets (aiortc waits for up to 512,
#: mediasoup counts up to 3000 as a gap), and with room for a count a poll or two stale.
SEQ_JUMP = 8192

#: Tries to find a free pair before giving up (the caller then sends from any port).
PICK_ATTEMPTS = 20


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _wildcard(host: str) -> str:
    return "::" if ":" in host else "0.0.0.0"


def can_bind(port: int, host: str = "127.0.0.1") -> bool:
    """True when ``port`` and ``port + 1`` (FFmpeg's RTCP socket) are free for UDP to ``host``."""
    if not 1 <= port < 65535:
        return False
    return all(_free(p, host) for p in (port, port + 1))


def _free(port: int, host: str) -> bool:
    with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((_wildcard(host), port))
        except OSError:
            return False
    return True


def clashes(port: int, avoid: Collection[int]) -> bool:
    """True when ``port`` or ``port + 1`` is one of the pairs (q, q + 1) of ``avoid``."""
    return any(abs(port - other) <= 1 for other in avoid)


def pick(host: str = "127.0.0.1", avoid: Collection[int] = ()) -> int | None:
    """A port the kernel found free, with a free neighbour, clear of ``avoid``'s pairs; None if none
    turned up (bounded)."""
    for _ in range(PICK_ATTEMPTS):
        with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
            sock.bind((_wildcard(host), 0))
            port = sock.getsockname()[1]
        if not clashes(port, avoid) and can_bind(port, host):
            return int(port)
    return None


def next_seq(last_start: int | None, sent: int) -> int:
    """The first RTP sequence number of a new FFmpeg run of a producer.

    A restarted FFmpeg keeps the producer's SSRC but starts its sequence anew,
    by default at random in 0..4095.  Behind where the last run ended, a
    viewer watching across the restart decodes nothing (its SRTP takes the
    packets for replays) until the sequence passes the last run's end, minutes
    after a long run; a little ahead, aiortc waits for the "missing" packets in
    between.  So a new run starts SEQ_JUMP ahead of where the last one ended:
    its start plus the ``sent`` packets mediasoup counted.  Unknown (the first
    run, an adopted producer): anywhere.
    """
    if last_start is None:
        return random.randrange(1 << 16)
    return (last_start + sent + SEQ_JUMP) % (1 << 16)
