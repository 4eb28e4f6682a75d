"""Load-balancer health: every check, every method, no caching by proxies."""
from __future__ import annotations

import pytest

from .conftest import snapshot_dict, stream


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/healthz"])
async def test_get_head_and_options_with_no_store(client, path):
    for method in ("GET", "HEAD", "OPTIONS"):
        resp = await client.request(method, path)
        assert resp.status == 200, (method, path)
        assert resp.headers["Cache-Control"] == "no-store"
        if method == "HEAD":
            assert await resp.read() == b""


async def test_ready_lists_every_check(client):
    body = await (await client.get("/readyz")).json()
    assert body["status"] == "ready" and body["failing"] == []
    assert [c["check"] for c in body["checks"]] == ["snapshot_fresh", "snapshot_readable", "agent_running",
                                                      "sfu_up", "live_ratio"]


@pytest.mark.parametrize("change,failing", [
    # Stale: the streams' state is unknown now, so the live ratio is not claimed either.
    (lambda n: n.age(6), ["snapshot_fresh", "live_ratio"]),
    (lambda n: (n.runtime / "state.json").write_bytes(b"\xff\xfe{garbage"),
     ["snapshot_readable", "agent_running"]),
    (lambda n: n.write(snapshot_dict([stream("a")], status="draining")), ["agent_running"]),
    (lambda n: n.write(snapshot_dict([stream("a")], status="stopped")), ["agent_running"]),
    (lambda n: n.write(snapshot_dict([stream("a"), stream("b", "error"), stream("c", "error")])), ["live_ratio"]),
    (lambda n: n.write(snapshot_dict([stream("a")], sfu={"state": "error"})), ["sfu_up"]),
    (lambda n: (n.runtime / "state.json").unlink(), ["snapshot_fresh", "agent_running"]),
])
async def test_each_failing_check_is_named_with_its_value(client, node, change, failing):
    change(node)
    resp = await client.get("/healthz")
    body = await resp.json()
    assert resp.status == 503 and body["failing"] == failing
    failed = {c["check"]: c for c in body["checks"] if not c["ok"]}
    assert all("value" in c and "want" in c for c in failed.values())
    assert (await client.get("/livez")).status == 200  # the exporter itself is fine


async def test_back_to_ready_when_the_agent_recovers(client, node):
    node.age(10)
    assert (await client.get("/readyz")).status == 503
    node.write(snapshot_dict([stream("a")]))
    assert (await client.get("/readyz")).status == 200


async def test_sfu_not_required_and_disabled_streams_do_not_count(aiohttp_client, node):
    from dataclasses import replace

    from exporter.app import create_app
    node.write(snapshot_dict([stream("a"), stream("off", "stopped")], sfu={"state": "error"}))
    client = await aiohttp_client(create_app(replace(node.settings, require_sfu=False, min_live_ratio=1.0)))
    assert (await client.get("/readyz")).status == 200


async def test_readyz_encodes_its_json_once_per_snapshot_and_writes_the_age_of_now(client, node, monkeypatch):
    """Issue 21, item 5: a load balancer's check costs a stat and a join, not a JSON encoding
    (half of /readyz's time went there); the body stays exactly the verdict's JSON with the
    snapshot's age at the moment of the answer."""
    import json

    from exporter import health
    from exporter.app import CONTEXT
    encoded = []
    real = json.dumps
    monkeypatch.setattr(health.json, "dumps", lambda *a, **k: encoded.append(1) or real(*a, **k))
    ctx = client.server.app[CONTEXT]
    for age in (1.0, 1.5, 2.0, 2.5):
        node.age(age)  # the same snapshot (same inode and size), only older
        text = await (await client.get("/readyz")).text()
        body = json.loads(text)
        expected = ctx.readiness(ctx.view())
        expected["checks"][0]["value"] = body["checks"][0]["value"]
        assert text == real(expected, separators=(",", ":"))
        assert age - 0.1 < body["checks"][0]["value"] < age + 1.0
    assert len(encoded) == 1, f"{len(encoded)} encodings for 4 answers about one snapshot"


def test_the_age_is_written_as_json_writes_it_rounded_to_the_millisecond():
    """/readyz writes the age itself (every check pays for it): byte for byte what
    ``json.dumps(round(age, 3))`` gives, at ties, whole seconds and past the fast path's range."""
    import json
    import random

    from exporter.health import age_json
    rng = random.Random(21)
    ages = [0.0, 0.0005, 0.0015, 0.0025, 1.0, 2.5, 9.9995, 999999999.9995, 1e9, 1e16, 5e-324, -0.2,
            *(k / 2000 for k in range(20000)), *(rng.uniform(0, 1e9) for _ in range(20000)),
            *(rng.expovariate(1) * 10 ** rng.randint(-4, 17) for _ in range(20000))]
    for age in ages:
        assert age_json(age) == json.dumps(round(age, 3)).encode(), age
    assert age_json(None) == b"null"
