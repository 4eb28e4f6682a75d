"""Three agents started staggered within the start window: placement follows ``prefer``."""
from __future__ import annotations

import threading
import time

import pytest

from tests.fleet.test_fleet import etcd_owners, fleet_config, running
from tests.integration.harness import CHEAP, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WINDOW_TTL = 4.0  # twice the fleet tests' lease: the start window (2 x TTL) must outlast a slow process start


def test_three_agents_started_staggered_within_the_window_place_by_prefer(etcd, agent_factory):
    """a at 0 s, b at 1.0 s, c at 2.4 s (lease_ttl 4 s, so a start window of 2 x 4 = 8 s): every stream on its
    preferred node at first claim, and no handback.  The window runs from a's registration and c must register
    inside it, so the 5.6 s margin is all process start-up may take.  Start-up varies by seconds on a loaded
    2-core box: with the fleet tests' 2 s lease (a 4 s window) c registered too late in two full runs, at 3.8 s
    and at 2.4 s after a's start, and a took one of c's streams."""
    names = ("a", "b", "c")
    streams = {f"p{n}{i}": {**CHEAP, "placement": {"prefer": [n]}} for n in names for i in range(2)}
    agents = {n: agent_factory(fleet_config(etcd.endpoints, n, streams, ttl=WINDOW_TTL), name=n) for n in names}
    threads = [threading.Thread(target=lambda n=n, d=d: (time.sleep(d), agents[n].start()))
               for n, d in (("b", 1.0), ("c", 2.4))]
    for t in threads:
        t.start()
    agents["a"].start()
    for t in threads:
        t.join(30)
    wait_for(lambda: len(etcd_owners(etcd.endpoints[0])) == len(streams), 40, "every stream claimed")
    owners = {sid: node for sid, (node, _) in etcd_owners(etcd.endpoints[0]).items()}
    assert owners == {sid: sid[1] for sid in streams}, owners
    wait_for(lambda: all(running(agents[n]) == {f"p{n}0", f"p{n}1"} for n in names), 15, "each on its preferred")
    time.sleep(WINDOW_TTL)
    for name, agent in agents.items():
        takeovers = agent.snapshot()["fleet"]["takeovers"]
        assert takeovers["start"] == 2 and takeovers["handback"] == 0, (name, takeovers)
