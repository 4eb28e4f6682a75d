"""Fleet mode end to end: several real agents on one machine, each with its own node
name, runtime_dir and recordings root, sharing one streams file through a real etcd."""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.client import HTTPConnection
from typing import Any

import pytest

from tests.faults.scenarios import processes_under
from tests.fleet.etcd import EtcdCluster
from tests.integration.harness import CHEAP, FAST, AgentProcess, alive, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TTL = 2.0


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
    agents = fleet(streams, names=("a", "b"))
    wait_for(lambda: sum(len(live(a)) for a in agents.values()) == len(streams) - 2, 30, "all but c's streams live")
    agents.update(fleet(streams, names=("c",)))  # joins late, as after a rolling restart
    wait_for(lambda: sum(len(live(a)) for a in agents.values()) == len(streams), 30, "every stream live somewhere")
    # Rendezvous says where the others go: c gets its share handed over once it has been up
    # for the hold-down (10 x lease_ttl), each with an overlap rather than a gap.
    from agent.fleet.placement import NodeView, StreamView, candidates
    view = {n: NodeView(n, True, 0, 64, 0.0) for n in agents}
    spread = {sid: candidates(StreamView(sid, (), (), None, 0.0), view)[0] for sid in streams if sid[0] == "r"}
    wait_for(lambda: {sid: n for sid, (n, _) in etcd_owners(etcd.endpoints[0]).items() if sid in spread} == spread
             and sum(len(running(a)) for a in agents.values()) == len(streams), 10 * TTL + 30, "the rendezvous spread")
    where = assert_one_owner_each(agents, list(streams))
    owners = etcd_owners(etcd.endpoints[0])
    assert {sid: node for sid, (node, _) in owners.items()} == where
    assert all(where[f"pa{i}"] == "a" and where[f"pb{i}"] == "b" for i in range(3))
    assert where["oc0"] == where["oc1"] == "c"
    assert {sid: where[sid] for sid in spread} == spread
    moved = [sid for sid in spread if spread[sid] == "c"]
    assert moved
    # etcd says c owns them; c's snapshot counts them a moment later (it is written after the change,
    # later still on a loaded box): wait for it rather than read it once.
    wait_for(lambda: agents["c"].snapshot()["fleet"]["takeovers"].get("handback", 0) == len(moved), 10,
             f"c's snapshot counting {len(moved)} handbacks")
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


def test_a_preferred_node_that_returns_gets_its_stream_back_without_a_gap(etcd, rtsp_camera, agent_factory):
    streams = {"cam1": {"url": rtsp_camera.url("cam1"), "placement": {"prefer": ["a", "b"]}}}
    b = agent_factory(fleet_config(etcd.endpoints, "b", streams), name="b").start()
    wait_for(lambda: live(b) == {"cam1"}, 30, "cam1 live on b while a is away")
    a = agent_factory(fleet_config(etcd.endpoints, "a", streams), name="a").start()
    # Measured on the files and in /proc, not through the snapshots (they are written up
    # to 50 ms after a change, and the order here is a matter of milliseconds).
    a_recording_at = b_stopped_at = None
    deadline = time.monotonic() + 10 * TTL + 30  # the hold-down is 10 x lease_ttl
    while time.monotonic() < deadline and (a_recording_at is None or b_stopped_at is None):
        now = time.monotonic()
        # Writing: any segment file, the one in progress (temp_file: `.ts.tmp`) included.  A complete
        # segment lags by up to a segment's length: b may stop, rightly, before a's first one is done.
        if a_recording_at is None and any((a.recordings / "cam1").glob("*.ts*")) and "cam1" in running(a):
            a_recording_at = now
        if b_stopped_at is None and "cam1" not in running(b):
            b_stopped_at = now
        time.sleep(0.02)
    assert a_recording_at is not None and b_stopped_at is not None, (a.log()[-2000:], b.log()[-2000:])
    assert a_recording_at <= b_stopped_at, "b stopped recording before a recorded: a gap"
    wait_for(lambda: live(a) == {"cam1"}, 10, "cam1 live on a")
    wait_for(lambda: etcd_owners(etcd.endpoints[0]).get("cam1", ("",))[0] == "a", 10, "a owning cam1")
    wait_for(lambda: a.snapshot()["fleet"]["takeovers"].get("handback") == 1, 5, "a's snapshot counting a handback")
    assert "handing cam1 back to a" in b.log()
    # The recordings overlap: a's first segment began before b's last one ended.
    wait_for(lambda: a.segments("cam1"), 20, "a's first segment")
    assert min(p.stat().st_mtime for p in a.segments("cam1")) <= max(p.stat().st_mtime for p in b.segments("cam1"))
    assert_one_owner_each({"a": a, "b": b}, ["cam1"])
    assert "cut off" not in a.log() + b.log()  # quiet periods (no etcd events for 15 s) are no failure


def test_losing_the_etcd_leader_moves_no_stream(etcd_cluster, fleet):
    streams = {f"s{i}": CHEAP for i in range(9)}
    agents = fleet(streams, endpoints={n: etcd_cluster.endpoints for n in ("a", "b", "c")})
    wait_for(lambda: sum(len(live(a)) for a in agents.values()) == len(streams), 30, "every stream live")
    before = etcd_owners(etcd_cluster.endpoints[0])
    pids = {n: a.pids() for n, a in agents.items()}
    leader = etcd_cluster.leader()
    leader.kill()
    time.sleep(3 * TTL)
    other = next(m for m in etcd_cluster.members if m is not leader)
    assert etcd_owners(other.url) == before  # same owners, same epochs
    assert {n: a.pids() for n, a in agents.items()} == pids  # no process restarted
    wait_for(lambda: all(a.snapshot()["fleet"]["etcd_up"] for a in agents.values()), 10, "every node on etcd")


def _firewall(port: int, on: bool) -> None:
    rule = ["INPUT", "-i", "lo", "-p", "tcp", "--dport", str(port), "-j", "DROP"]
    subprocess.run(["iptables", "-I" if on else "-D", *rule], check=True)


def test_a_node_cut_off_from_etcd_keeps_recording_then_yields(etcd, fleet):
    """The agent's etcd port firewalled: it keeps its streams (a duplicate beats a gap) and
    turns not-ready; the others take them over; back on etcd it stops its copies."""
    cut_port = etcd.members[0].extra_ports[0]
    streams = {f"s{i}": {**CHEAP, "placement": {"prefer": ["a"]}} for i in range(4)}
    agents = fleet(streams, names=("a", "b"), endpoints={"a": [f"http://127.0.0.1:{cut_port}"]})
    a, b = agents["a"], agents["b"]
    wait_for(lambda: live(a) == set(streams), 30, "a running its preferred streams")
    pids = a.pids()
    _firewall(cut_port, True)
    try:
        wait_for(lambda: not a.snapshot()["fleet"]["etcd_up"], 3 * TTL + 10, "a seeing itself cut off")
        wait_for(lambda: live(b) == set(streams), TTL + 10, "b taking the streams over")
        assert a.pids() == pids and running(a) == set(streams), "a stopped recording while cut off"
        out = a.vasctl("fleet", "status")
        assert out.returncode == 1 and "cut off from etcd" in out.stderr
    finally:
        _firewall(cut_port, False)
    wait_for(lambda: a.snapshot()["fleet"]["etcd_up"], 30, "a back on etcd")
    wait_for(lambda: not running(a), 15, "a stopping the copies b owns now")
    assert_one_owner_each(agents, list(streams))
    assert {node for node, _ in etcd_owners(etcd.endpoints[0]).values()} == {"b"}


def test_capacity_is_never_exceeded(etcd, fleet):
    streams = {f"s{i}": {**CHEAP, "placement": {"prefer": ["a"]}} for i in range(6)}
    agents = fleet(streams, names=("a", "b"), max_streams=3)
    wait_for(lambda: sum(len(live(a)) for a in agents.values()) == len(streams), 30, "every stream live")
    assert len(running(agents["a"])) == 3 and len(running(agents["b"])) == 3
    assert_one_owner_each(agents, list(streams))


def test_producers_carry_the_epoch_and_a_stale_owner_is_refused(etcd, rtsp_camera, agent_factory):
    """The SFU registration is fenced by the ownership epoch (the reference SFU on real mediasoup
    applies the contract's rule: a producer of a lower epoch than the stream's current one is
    refused and nothing changes)."""
    from camera.fixture import free_port
    from tests.integration.test_sfu import get, post, sfu_section
    from tests.sfu.real_sfu import start_real_sfu
    port = free_port()
    sfu = start_real_sfu(port)
    try:
        cfg = fleet_config(etcd.endpoints, "a", {"cam1": {"url": rtsp_camera.url("cam1")}})
        cfg["mediasoup"] = sfu_section(port, managed=False)
        a = agent_factory(cfg, name="a").start()
        wait_for(lambda: live(a) == {"cam1"}, 45, "cam1 live through the SFU")
        epoch = etcd_owners(etcd.endpoints[0])["cam1"][1]
        [producer] = get(port, "/producers")  # type: ignore[misc]
        assert producer["epoch"] == epoch
        wait_for(lambda: any(f"-e{epoch}_" in p.name for p in a.segments("cam1")), 20, "segments named by epoch")
        try:
            post(port, "/producers", {"stream_id": "cam1", "ssrc": 1, "payload_type": 96, "epoch": epoch - 1})
            raise AssertionError("a stale epoch was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 409
        assert [p["producer_id"] for p in get(port, "/producers")] == [producer["producer_id"]]  # type: ignore[attr-defined]
    finally:
        os.killpg(sfu.pid, signal.SIGKILL)
        sfu.wait(5)


def test_prometheus_discovers_every_live_node_through_http_sd(etcd, agent_factory, tmp_path):
    """A real Prometheus with http_sd_configs on one node's /v2/fleet/targets scrapes both
    nodes' exporters; each node's metrics say it reaches etcd and what it owns."""
    from camera.fixture import free_port
    from tests.integration.prometheus import scraping
    from tests.integration.test_exporter import Exporter, http
    streams = {f"s{i}": CHEAP for i in range(4)}
    ports = {"a": free_port(), "b": free_port()}
    agents = {}
    for name in ("a", "b"):
        cfg = fleet_config(etcd.endpoints, name, streams)
        cfg["cluster"]["advertise_url"] = f"http://127.0.0.1:{ports[name]}"
        cfg["exporter"] = {"listen": f"127.0.0.1:{ports[name]}", "tokens_file": str(tmp_path / "tokens")}
        agents[name] = agent_factory(cfg, name=name)
    start_all(list(agents.values()))
    exporters = [Exporter(agents[n], ports[n]) for n in ("a", "b")]
    try:
        wait_for(lambda: sum(len(live(a)) for a in agents.values()) == 4, 30, "every stream live")
        code, body = http(ports["a"], "/v2/fleet/targets")
        assert code == 200
        targets = sorted(t for group in json.loads(body) for t in group["targets"])
        assert targets == sorted(f"127.0.0.1:{p}" for p in ports.values())
        # A stream owned by b, asked of a: a says who owns it and where (307 to b's exporter).
        elsewhere = next(iter(running(agents["b"])))
        conn = HTTPConnection("127.0.0.1", ports["a"], timeout=5)
        conn.request("GET", f"/v2/health/streams/{elsewhere}")
        resp = conn.getresponse()
        assert resp.status == 307 and json.loads(resp.read())["owner"]["node"] == "b"
        assert resp.getheader("Location") == f"http://127.0.0.1:{ports['b']}/v2/health/streams/{elsewhere}"
        conn.close()
        code, body = http(ports["a"], f"/v2/health/streams/{elsewhere}")  # followed: b answers
        assert code == 200 and json.loads(body)["state"] == "live"
        with scraping(ports["a"], tmp_path, http_sd=True) as prom:
            def up_both() -> Any:
                status, result = prom.query('vas_fleet_etcd_up == 1')
                return sorted(r["metric"].get("vas_node") for r in result) == ["a", "b"] and result
            wait_for(up_both, 60, "Prometheus scraping both nodes found by http_sd")
            _, owned = prom.query("sum(vas_fleet_owned_streams)")
            assert float(owned[0]["value"][1]) == 4
    finally:
        for e in exporters:
            e.stop()
