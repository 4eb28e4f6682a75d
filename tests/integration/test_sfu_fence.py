"""The reference SFU's own promises (sfu/server.js on real mediasoup): its epoch fence as
the contract and the stand-in have it, answers that change nothing when they refuse,
and mediasoup's loss counter in ``GET /producers``."""
from __future__ import annotations

import socket
import struct
import urllib.error

import pytest

from sfu.real_sfu import SharedSfu, call, consume_without_client, get

from .harness import wait_for

pytestmark = pytest.mark.integration


def refused(port: int, method: str, path: str, body: dict | None = None) -> int:
    """The HTTP status of a call that must fail."""
    with pytest.raises(urllib.error.HTTPError) as error:
        call(port, method, path, body)
    return error.value.code


def producer(port: int, stream_id: str, **fence) -> dict:
    return call(port, "POST", "/producers", {"stream_id": stream_id, "ssrc": 1234,  # type: ignore[return-value]
                                             "payload_type": 96, **fence})


def test_a_create_without_epoch_is_not_fenced_and_viewers_get_the_owners_producer(real_sfu: SharedSfu):
    """As in the stand-in (and as a fleet node warming up for a handback needs): a POST without
    epoch registers a producer next to the owner's; an older epoch is refused; a viewer is given
    the newest epoch's producer whatever the order of registration."""
    port = real_sfu.port
    owner = producer(port, "cam1", epoch=5, node="b")
    warming = producer(port, "cam1", node="a")
    assert refused(port, "POST", "/producers", {"stream_id": "cam1", "ssrc": 1, "payload_type": 96,
                                                "epoch": 4}) == 409
    assert sorted(p["producer_id"] for p in get(port, "/producers")) == \
        sorted([owner["producer_id"], warming["producer_id"]])  # type: ignore[attr-defined]
    assert consume_without_client(port, "cam1")["producer_id"] == owner["producer_id"]
    assert "refused create of stream cam1 with epoch 4" in real_sfu.log()


def test_refused_adopts_and_deletes_change_nothing(real_sfu: SharedSfu):
    """An adopt with a bad node, or a DELETE with a bad ?epoch=, is a 400 that leaves the
    producer as it was (the fence answers "with nothing changed")."""
    port = real_sfu.port
    made = producer(port, "cam1", epoch=5, node="a")
    pid = made["producer_id"]
    assert refused(port, "POST", f"/producers/{pid}/adopt", {"epoch": 7, "node": 5}) == 400
    assert refused(port, "DELETE", f"/producers/{pid}?epoch=abc") == 400
    assert refused(port, "DELETE", f"/producers/{pid}?epoch=4") == 409
    [listed] = get(port, "/producers")  # type: ignore[misc]
    assert (listed["producer_id"], listed["epoch"], listed["node"]) == (pid, 5, "a")
    call(port, "DELETE", f"/producers/{pid}?epoch=5")
    assert get(port, "/producers") == []
    assert real_sfu.closed() == [f"closed producer {pid} of stream cam1 (node a, epoch 5) by DELETE with epoch 5"]


def test_get_producers_gives_mediasoups_count_of_lost_packets(real_sfu: SharedSfu):
    """``packets_lost``: mediasoup's RFC 3550 count from the sequence numbers (a gap of 6),
    updated when it makes its RTCP receiver report (about every second)."""
    port = real_sfu.port
    made = producer(port, "cam1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for seq in (1000, 1001, 1002, 1009, 1010):
            udp.sendto(struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, 1234) + b"\x65" + b"x" * 100,
                       (made["rtp_host"], made["rtp_port"]))
    listed = wait_for(lambda: (p := get(port, "/producers")[0])["packets_lost"] and p, 5,  # type: ignore[index]
                      "mediasoup's receiver report")
    assert (listed["packets"], listed["packets_lost"]) == (5, 6)
