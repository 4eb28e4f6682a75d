"""Status that tells the truth about the agent's state (issue 16, items 15, 17 and 18):
a stale snapshot claims nothing about the present; an unreadable one answers 503."""
from __future__ import annotations

import json
import time

import pytest

from .conftest import snapshot_dict, stream

PER_STREAM = ["/v2/health/streams/cam1", "/v2/health/recordings/cam1", "/v2/health/ingestion",
              "/v2/health/producers", "/v2/health/consumers", "/v2/health/recordings"]
PRODUCER = {"id": "p1", "rtp_host": "127.0.0.1", "rtp_port": 40000, "ssrc": 1, "payload_type": 96,
            "since": 1.0, "packets": 10, "bytes": 1000, "score": 10, "confirmed": True}


def _running_node(node) -> None:
    started = time.time() - 100
    node.write(snapshot_dict([stream("cam1", pid=4242, pid_started_at=started, producer=PRODUCER),
                              stream("cam2", pid=4343, pid_started_at=started)],
                             sfu={"state": "up", "pid": 99, "restart_reasons": {}, "api_url": "http://x"},
                             consumers={"active": [], "per_stream": {}}))


async def test_a_stale_snapshot_says_so_and_claims_nothing_live(client, node):
    _running_node(node)
    fresh = await (await client.get("/v2/health/streams/cam1")).json()
    assert fresh["state"] == "live" and fresh["up"] is True and fresh["stale"] is False
    node.age(8)  # the agent was SIGKILLed 8 s ago
    body = await (await client.get("/v2/health/streams/cam1")).json()
    assert body["state"] == "unknown" and body["up"] is False and body["stale"] is True
    assert body["last_known_state"] == "live" and body["pid"] is None and body["last_known_pid"] == 4242
    assert body["snapshot_age_seconds"] >= 8 and body["producer"]["confirmed"] is False
    system = await (await client.get("/v2/health/system")).json()
    assert system["sfu"]["state"] == "unknown" and system["streams"]["by_state"] == {"unknown": 2}
    assert system["agent"]["stale"] is True and system["status"] == "down"
    ingestion = await (await client.get("/v2/health/ingestion")).json()
    assert all(p["uptime_seconds"] is None and p["pid"] is None for p in ingestion["processes"])
    recordings = await (await client.get("/v2/health/recordings")).json()
    assert recordings["stale"] is True and all(r["stale"] for r in recordings["streams"])
    text = await (await client.get("/v2/metrics")).text()
    assert 'vas_stream_up{stream="cam1"} 0.0' in text and "vas_sfu_up 0.0" in text
    assert 'vas_stream_state{state="unknown",stream="cam1"} 1.0' in text
    assert 'vas_stream_state{state="live",stream="cam1"} 0.0' in text
    assert "vas_stream_uptime_seconds{" not in text and "vas_producer_uptime_seconds{" not in text
    assert "vas_agent_up 0.0" in text


async def test_fresh_again_shows_the_agent_word_again(client, node):
    _running_node(node)
    node.age(8)
    assert (await (await client.get("/v2/health/streams/cam1")).json())["state"] == "unknown"
    _running_node(node)
    body = await (await client.get("/v2/health/streams/cam1")).json()
    assert body["state"] == "live" and body["up"] is True and body["pid"] == 4242
    assert 'vas_stream_up{stream="cam1"} 1.0' in await (await client.get("/v2/metrics")).text()


def _typed(**changes) -> bytes:
    s = stream("cam1")
    s.update(changes)
    return json.dumps(snapshot_dict([s, stream("cam2")])).encode()


CORRUPTIONS = {
    "non-utf8 garbage": b"\xff\xfe\x00\x81garbage",
    "empty": b"",
    "truncated": json.dumps(snapshot_dict([stream("cam1")])).encode()[:-7],
    "a list": b"[1, 2, 3]",
    "streams a string": json.dumps({**snapshot_dict([]), "streams": "cam1"}).encode(),
    "agent a list": json.dumps({**snapshot_dict([stream("cam1")]), "agent": []}).encode(),
    "stream id a number": _typed(id=7),
    "state a list": _typed(state=["live"]),
    "pid a string": _typed(pid="4242"),
    "restart reasons strings": _typed(restart_reasons={"exit": "many"}),
    "progress a string": _typed(progress="fast"),
    "producer a list": _typed(producer=[1]),
    "recording deleted a number": _typed(recording={"enabled": True, "deleted": 5}),
    "consumers active an object": json.dumps(snapshot_dict([stream("cam1")], sfu={"state": "up"},
                                                          consumers={"active": {"c": 1}})).encode(),
    "deep nesting": b"[" * 100000 + b"]" * 100000,
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
async def test_a_corrupt_snapshot_is_503_agent_state_unreadable(client, node, name):
    (node.runtime / "state.json").write_bytes(CORRUPTIONS[name])
    for path in PER_STREAM:
        resp = await client.get(path)
        body = await resp.json()
        assert resp.status == 503 and "agent state unreadable" in body["error"], (name, path, resp.status, body)
    ready = await client.get("/readyz")
    assert ready.status == 503 and "snapshot_readable" in (await ready.json())["failing"]
    text = await (await client.get("/v2/metrics")).text()
    assert "vas_agent_state_readable 0.0" in text and "vas_agent_up 0.0" in text
    system = await client.get("/v2/health/system")
    assert system.status == 200 and (await system.json())["agent"]["state_readable"] is False
    beat = await client.post("/v2/health/consumers/c1/heartbeat", headers={"Authorization": f"Bearer {node.admin}"})
    assert beat.status == 503 and (await beat.json())["applied"] is False
    _running_node(node)  # the agent writes a good one again: all back
    assert (await client.get("/v2/health/streams/cam1")).status == 200
    assert "vas_agent_state_readable 1.0" in await (await client.get("/v2/metrics")).text()
