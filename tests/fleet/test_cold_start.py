"""A cold start (after a site power cut every host starts at once) honours ``prefer``:
no node claims a stream that another starting node is ahead for, so no handback follows."""
from __future__ import annotations

import threading
import time

import pytest

from tests.fleet.test_fleet import TTL, etcd_owners, fleet_config, running
from tests.integration.harness import CHEAP, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_agents_started_together_place_by_prefer_with_no_handover(etcd, agent_factory):
    """Issue 16 item 14b: a and b start a second apart (as hosts boot after a power cut);
    every stream starts on its preferred node at once, and none is handed back later."""
    streams = {**{f"pa{i}": {**CHEAP, "placement": {"prefer": ["a"]}} for i in range(2)},
               **{f"pb{i}": {**CHEAP, "placement": {"prefer": ["b"]}} for i in range(2)}}
    agents = {n: agent_factory(fleet_config(etcd.endpoints, n, streams), name=n) for n in ("a", "b")}
    late = threading.Thread(target=lambda: (time.sleep(1.0), agents["b"].start()))
    late.start()
    agents["a"].start()
    late.join(30)
    wait_for(lambda: len(etcd_owners(etcd.endpoints[0])) == len(streams), 30, "every stream claimed")
    owners = {sid: node for sid, (node, _) in etcd_owners(etcd.endpoints[0]).items()}
    assert owners == {sid: sid[1] for sid in streams}, owners
    wait_for(lambda: running(agents["a"]) == {"pa0", "pa1"} and running(agents["b"]) == {"pb0", "pb1"}, 15,
             "each agent running its preferred streams")
    time.sleep(TTL)
    for name, agent in agents.items():
        takeovers = agent.snapshot()["fleet"]["takeovers"]
        assert takeovers["start"] == 2 and takeovers["handback"] == 0, (name, takeovers)
        assert "handing" not in agent.log()
