"""Fleet mode end to end: several real agents on one machine, each with its own node
name, runtime_dir and recordings root, sharing one streams file through a real etcd."""
from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from typing import Any

import pytest

from tests.faults.scenarios import processes_under
from tests.fleet.etcd import EtcdCluster
from tests.integration.harness import FAST, AgentProcess, alive, wait_for

pytestmark = pytest.mark.integration
TTL = 2.0
#: A cheap child: one process per stream, its recording dir in its argv, no camera needed.
CHEAP = {"command": ["tail", "-F", "-s", "60", "{recording_dir}/.alive"], "ready_after": "0.5s"}


def fleet_config(endpoints: list[str], name: str, streams: dict, *, max_streams: int = 64,
                 ttl: float = TTL) -> dict[str, Any]:
    return {"cluster": {"node_name": name, "etcd": {"endpoints": endpoints, "prefix": "/vas"},
                        "lease_ttl": f"{ttl:g}s", "max_streams": max_streams,
                        "advertise_url": f"http://127.0.0.1:{9000 + ord(name[-1])}"},
            "defaults": dict(FAST), "streams": streams}


def start_all(agents: list[AgentProcess]) -> None:
    """Start agents together (as a fleet comes up), each waiting for its first snapshot."""
    errors: list[BaseException] = []

    def run(agent: AgentProcess) -> None:
        try:
            agent.start()
        except BaseException as exc:  # reported below
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def etcd_owners(endpoint: str, prefix: str = "/vas") -> dict[str, tuple[str, int]]:
    """Stream -> (node, epoch) as etcd holds it right now."""
    start = f"{prefix}/owners/".encode()
    body = {"key": base64.b64encode(start).decode(),
            "range_end": base64.b64encode(start[:-1] + bytes([start[-1] + 1])).decode()}
    req = urllib.request.Request(endpoint + "/v3/kv/range", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        data = json.loads(resp.read())
    out = {}
    for kv in data.get("kvs", []):
        key = base64.b64decode(kv["key"]).decode()[len(start):]
        out[key] = (json.loads(base64.b64decode(kv["value"]))["node"], int(kv["create_revision"]))
    return out


def running(agent: AgentProcess) -> set[str]:
    """Streams with a live process of this agent (by /proc, not by what it says)."""
    if agent.proc is None or agent.proc.poll() is not None:
        return set()
    return set(processes_under(agent.recordings))


def live(agent: AgentProcess) -> set[str]:
    try:
        return {sid for sid, s in agent.streams().items() if s["state"] == "live" and alive(s["pid"])}
    except (OSError, ValueError, KeyError):
        return set()


def assert_one_owner_each(agents: dict[str, AgentProcess], streams: list[str]) -> dict[str, str]:
    """Every stream runs on exactly one agent, the one etcd names."""
    where: dict[str, list[str]] = {}
    for name, agent in agents.items():
        for sid in running(agent):
            where.setdefault(sid, []).append(name)
    assert sorted(where) == sorted(streams), where
    assert all(len(v) == 1 for v in where.values()), f"a stream runs twice: {where}"
    return {sid: v[0] for sid, v in where.items()}


@pytest.fixture
def fleet(etcd: EtcdCluster, agent_factory):
    """``fleet(streams, names=("a", "b", "c"), **kw)`` -> {name: started AgentProcess}."""
    def make(streams: dict, names: tuple[str, ...] = ("a", "b", "c"), endpoints: dict[str, list[str]] | None = None,
             **kw: Any) -> dict[str, AgentProcess]:
        agents = {n: agent_factory(fleet_config((endpoints or {}).get(n, etcd.endpoints), n, streams, **kw), name=n)
                  for n in names}
        start_all(list(agents.values()))
        return agents
    return make


def test_streams_spread_as_placement_says_and_each_runs_once(etcd, fleet):
    streams = {**{f"pa{i}": {**CHEAP, "placement": {"prefer": ["a"]}} for i in range(3)},
               **{f"pb{i}": {**CHEAP, "placement": {"prefer": ["b", "a"]}} for i in range(3)},
               **{f"oc{i}": {**CHEAP, "placement": {"allow": ["c"]}} for i in range(2)},
               **{f"r{i}": CHEAP for i in range(8)}}
    agents = fleet(streams)
    wait_for(lambda: sum(len(live(a)) for a in agents.values()) == len(streams), 30, "every stream live somewhere")
    where = assert_one_owner_each(agents, list(streams))
    owners = etcd_owners(etcd.endpoints[0])
    assert {sid: node for sid, (node, _) in owners.items()} == where
    assert all(where[f"pa{i}"] == "a" and where[f"pb{i}"] == "b" for i in range(3))
    assert where["oc0"] == where["oc1"] == "c"
    from agent.placement import NodeView, StreamView, candidates
    view = {n: NodeView(n, True, 0, 64, 0.0) for n in agents}
    assert all(where[f"r{i}"] == candidates(StreamView(f"r{i}", (), (), None, 0.0), view)[0] for i in range(8))
    # Epochs are the ownership keys' revisions, and name the segments' runs.
    snap = agents["a"].snapshot()["fleet"]
    assert snap["etcd_up"] and snap["owners"]["pa0"]["epoch"] == owners["pa0"][1]
    out = agents["b"].vasctl("fleet", "status")
    assert out.returncode == 0, out.stderr
    assert "pb0" in out.stdout and "a" in out.stdout and f"{owners['pb0'][1]}" in out.stdout


def test_a_killed_agent_streams_move_to_survivors_in_time_and_once(etcd, fleet):
    streams = {f"s{i}": CHEAP for i in range(12)}
    agents = fleet(streams)
    wait_for(lambda: sum(len(live(a)) for a in agents.values()) == len(streams), 30, "every stream live")
    victim = max(agents, key=lambda n: len(running(agents[n])))
    lost = running(agents[victim])
    assert lost
    killed_at = time.monotonic()
    agents[victim].kill()
    survivors = {n: a for n, a in agents.items() if n != victim}
    wait_for(lambda: lost <= set().union(*(live(a) for a in survivors.values())), TTL + 5,
             f"{sorted(lost)} live on the survivors")
    took = time.monotonic() - killed_at
    print(f"\ntakeover of {len(lost)} streams: {took:.2f}s after SIGKILL (lease_ttl {TTL:g}s)")
    time.sleep(1)
    assert_one_owner_each(survivors, list(streams))
    assert all(r[0] != victim for r in etcd_owners(etcd.endpoints[0]).values())
    reasons = [a.snapshot()["fleet"]["takeovers"]["failover"] for a in survivors.values()]
    assert sum(reasons) == len(lost)
