"""SfuClient against the reference SFU on real mediasoup (every call of the contract),
and against the stand-in for every way an SFU can misbehave that a real one cannot be
made to (garbage, slow answers, 500s): each ends in one clear SfuError within a
bounded time."""
from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.sfu import client as client_module
from agent.sfu.client import SfuClient, SfuError, retry_wait
from camera.fixture import free_port
from sfu.real_sfu import consume_without_client, start_real_sfu

pytestmark = pytest.mark.integration
STANDIN = Path(__file__).resolve().parents[1] / "sfu" / "standin_sfu.py"


@pytest.fixture
def standin():
    """The stand-in SFU (tests/sfu/standin_sfu.py) made to misbehave (``--chaos``)."""
    procs = []

    async def start(*chaos: str) -> str:
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, str(STANDIN), "--port", str(port), *chaos],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(100):  # listening (a fixed sleep was too short on a loaded box)
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            await asyncio.sleep(0.1)
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def real_sfu_port():
    """A reference SFU of this test's own (its producers are this test's only)."""
    port = free_port()
    proc = start_real_sfu(port)
    yield port
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def rtp(seq: int, ssrc: int, payload_type: int = 96) -> bytes:
    """One RTP packet (V=2) with a one-byte H.264 NAL header and 100 bytes of payload."""
    return struct.pack("!BBHII", 0x80, payload_type, seq, seq * 3000, ssrc) + b"\x65" + b"x" * 100


async def test_every_call_of_the_contract(real_sfu_port):
    """mediasoup counts only packets at the producer's SSRC, and a stream whose payload type is
    not the announced one is never counted: ``packets`` proves both."""
    client = SfuClient(f"http://127.0.0.1:{real_sfu_port}")
    try:
        assert await client.health()
        made = await client.create_producer("cam1", ssrc=1234, payload_type=96)
        wrong_pt = await client.create_producer("cam2", ssrc=5678, payload_type=96)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:  # real RTP packets
            for seq in range(1000, 1003):
                udp.sendto(rtp(seq, 1234), (made.rtp_host, made.rtp_port))
                udp.sendto(rtp(seq, 5678, payload_type=97), (wrong_pt.rtp_host, wrong_pt.rtp_port))
            udp.sendto(rtp(1003, 999), (made.rtp_host, made.rtp_port))  # another SSRC: dropped
        await asyncio.sleep(0.3)
        by_id = {p.producer_id: p for p in await client.producers()}
        p = by_id[made.producer_id]
        assert (p.producer_id, p.stream_id, p.ssrc, p.packets) == (made.producer_id, "cam1", 1234, 3)
        assert (p.rtp_host, p.rtp_port) == (made.rtp_host, made.rtp_port)
        assert by_id[wrong_pt.producer_id].packets == 0
        viewer = consume_without_client(real_sfu_port, "cam1")
        [consumer] = await client.consumers()
        assert (consumer.consumer_id, consumer.stream_id) == (viewer["consumer_id"], "cam1")
        assert await client.delete_consumer(viewer["consumer_id"]) is True
        assert await client.consumers() == []
        assert await client.delete_consumer(viewer["consumer_id"]) is False  # 404: already gone
        assert await client.delete_producer(made.producer_id) is True
        assert await client.delete_producer(made.producer_id) is False  # 404: already gone
        assert [p.producer_id for p in await client.producers()] == [wrong_pt.producer_id]
    finally:
        await client.close()
        await client.close()  # twice is fine


@pytest.mark.slow
@pytest.mark.parametrize("chaos,message", [
    ("500", "GET /producers: 500 boom"),
    ("slow", "GET /producers: timed out after 0.5s"),
    ("badjson", "GET /producers: malformed JSON"),
    ("wrongshape", "GET /producers: expected a list of objects"),
    ("hugebody", "GET /producers: body larger than 1 MiB"),
])
async def test_a_misbehaving_standin_gives_one_clear_error(standin, chaos, message):
    client = SfuClient(await standin("--chaos", chaos), timeout=0.5, attempts=2)
    started = time.monotonic()
    try:
        with pytest.raises(SfuError) as info:
            await client.producers()
        assert str(info.value) == message
        # /health needs a 200 only (any body), within the timeout and the body limit.
        assert await client.health() is (chaos in ("badjson", "wrongshape"))
    finally:
        await client.close()
    assert time.monotonic() - started < 10


async def test_nothing_listening_is_an_error_after_bounded_retries():
    client = SfuClient(f"http://127.0.0.1:{free_port()}", timeout=0.5, attempts=3)
    started = time.monotonic()
    with pytest.raises(SfuError, match="^GET /consumers: "):
        await client.consumers()
    await client.close()
    assert time.monotonic() - started < 5


def test_retries_wait_a_little_longer_each_time_up_to_two_seconds():
    assert [retry_wait(n) for n in (1, 2, 3, 4, 5, 6, 5000)] == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]


async def test_calls_leave_no_reference_cycle_behind(real_sfu_port, standin):
    """The agent lists producers and consumers about once a second.  A call, answered, retried
    after a 500 or refused (the SFU down), is freed by reference counting alone: garbage for
    the cyclic collector is memory held until a collection, and a long-lived process's heap
    fragments around it."""
    here = client_module.__file__

    def ours(garbage: list) -> list:  # another test's leftovers may turn unreachable meanwhile
        return [o for o in garbage if type(o).__module__.startswith("tenacity")
                or getattr(getattr(o, "f_code", None), "co_filename", "") == here
                or getattr(getattr(o, "__code__", None), "co_filename", "") == here]

    ok = SfuClient(f"http://127.0.0.1:{real_sfu_port}")
    failing = SfuClient(await standin("--chaos", "500"), timeout=0.5, attempts=2)
    refused = SfuClient(f"http://127.0.0.1:{free_port()}", timeout=0.5, attempts=2)  # an SFU down
    try:
        await ok.producers()  # the session and its connection, made once
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept in gc.garbage instead of freed
        try:
            for _ in range(5):
                await ok.producers()
                await ok.consumers()
            with pytest.raises(SfuError, match="^GET /producers: 500"):
                await failing.producers()  # tried twice
            with pytest.raises(SfuError, match="^GET /producers: Cannot connect"):
                await refused.producers()  # aiohttp keeps its error in a frame on its own traceback
            gc.collect()
            found = ours(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    finally:
        await ok.close()
        await failing.close()
        await refused.close()
    assert found == []
