"""A handback offer that arrives (by etcd's watch) while this node is telling etcd it is warm for
another one: the node's view of the offers changes under it, and its planner must go on."""
from __future__ import annotations

import json

import yaml

from agent.config.loader import load
from agent.fleet.node import Fleet
from tests.fleet.test_fleet import fleet_config
from tests.integration.harness import CHEAP


async def test_an_offer_arriving_during_a_warm_put_does_not_end_the_session(etcd, tmp_path):
    path = tmp_path / "streams.yaml"
    path.write_text(yaml.safe_dump({"version": 1, **fleet_config(etcd.endpoints, "n2", {"s1": CHEAP, "s2": CHEAP})}))
    cfg = load(path)
    fleet = Fleet(cfg.cluster, lambda: cfg, apply=lambda running: None,  # type: ignore[arg-type, return-value]
                  live=lambda sid: True, ready=lambda: True, on_change=lambda: None)
    try:
        fleet.lease = await fleet.client.grant(30)
        fleet.handoffs["s1"] = {"from": "n1", "to": "n2"}
        real_put = fleet.client.put

        async def put_while_an_offer_arrives(key: str, value: bytes, lease: int = 0) -> int:
            """The real write; while it is awaited, n1 offers s2 too and the watch hands that to the cache."""
            revision = await real_put(key, value, lease)
            offer_key = fleet._key("handoff", "s2")
            if await fleet.client.get(offer_key) is None:
                await real_put(offer_key, json.dumps({"from": "n1", "to": "n2"}).encode())
                fleet._put(await fleet.client.get(offer_key))  # type: ignore[arg-type]  # as the watch loop does
            return revision

        fleet.client.put = put_while_an_offer_arrives  # type: ignore[method-assign]
        await fleet._receive()
        await fleet._receive()  # the next pass takes up the offer that arrived meanwhile
        assert fleet.warm == {"s1": "n2", "s2": "n2"}
        assert fleet.warming == {"s1", "s2"}
        assert json.loads((await fleet.client.get(fleet._key("warm", "s1"))).value)["node"] == "n2"  # type: ignore[union-attr]
    finally:
        await fleet.client.close()
