"""SfuClient against the real stand-in SFU process: every call, and every way the
SFU can misbehave ends in one clear SfuError within a bounded time."""
from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.sfu_client import SfuClient, SfuError
from camera.fixture import free_port

pytestmark = pytest.mark.integration
STANDIN = Path(__file__).resolve().parents[1] / "sfu" / "standin_sfu.py"


@pytest.fixture
def standin():
    procs = []

    async def start(*chaos: str) -> str:
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, str(STANDIN), "--port", str(port), *chaos],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        url = f"http://127.0.0.1:{port}"
        # Wait until it listens (a chaos stand-in never answers /health with 200): a fixed
        # sleep was too short on a loaded box (connection refused instead of the chaos).
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        return url

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(5)


async def test_every_call_of_the_contract(standin):
    client = SfuClient(await standin())
    try:
        assert await client.health()
        made = await client.create_producer("cam1", ssrc=1234, payload_type=96)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:  # three real RTP packets
            for seq in range(3):
                udp.sendto(struct.pack("!BBHII", 0x80, 96, seq, 0, 1234) + b"x" * 100,
                           (made.rtp_host, made.rtp_port))
        await asyncio.sleep(0.3)
        [p] = await client.producers()
        assert (p.producer_id, p.stream_id, p.ssrc, p.packets) == (made.producer_id, "cam1", 1234, 3)
        assert (p.rtp_host, p.rtp_port) == (made.rtp_host, made.rtp_port)
        assert await client.delete_producer(made.producer_id) is True
        assert await client.delete_producer(made.producer_id) is False  # 404: already gone
        assert await client.consumers() == []
        assert await client.delete_consumer("nope") is False
    finally:
        await client.close()
        await client.close()  # twice is fine


@pytest.mark.parametrize("chaos,message", [
    ("500", "GET /producers: 500 boom"),
    ("slow", "GET /producers: timed out after 0.5s"),
    ("badjson", "GET /producers: malformed JSON"),
    ("wrongshape", "GET /producers: expected a list of objects"),
    ("hugebody", "GET /producers: body larger than 1 MiB"),
])
async def test_misbehaving_sfu_gives_one_clear_error(standin, chaos, message):
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
