"""One owner per camera in the SFU: two fleet agents sharing one SFU (the reference SFU on
real mediasoup, sfu/server.js, which implements the contract's epoch fencing), real etcd,
real FFmpeg.  Who closed which producer is read from the SFU's own log (every close and
refusal is logged there)."""
from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

import pytest

from tests.fleet.test_fleet import etcd_owners, fleet_config, live, running, start_all
from tests.integration.harness import AgentProcess, wait_for
from tests.integration.test_sfu import receiving
from tests.sfu.real_sfu import SharedSfu, start_real_sfu

pytestmark = [pytest.mark.integration, pytest.mark.slow]
#: Seconds the shared SFU is watched (the issue's figure is over 60 s: VAS_SHARED_SFU_SECONDS=60).
WATCH = float(os.environ.get("VAS_SHARED_SFU_SECONDS", "20"))


@pytest.fixture
def sfu(real_sfu: SharedSfu) -> SharedSfu:
    """The shared reference SFU on its own (no ``mediasoup.command``), empty."""
    return real_sfu


CLOSED = re.compile(r"closed producer (?P<producer_id>\S+) of stream (?P<stream_id>\S+) "
                    r"\(node (?P<node>\S+), epoch (?P<epoch>\S+)\) by DELETE with epoch (?P<by_epoch>\S+)$")


def deleted(sfu: SharedSfu) -> list[dict[str, Any]]:
    """The producers the SFU closed on a DELETE during this test, from its log."""
    out = []
    for line in sfu.closed():
        match = CLOSED.match(line)
        assert match, line
        d: dict[str, Any] = match.groupdict()
        out.append({**d, "by_epoch": None if d["by_epoch"] == "none" else int(d["by_epoch"])})
    return out


def listed(port: int) -> list[dict[str, Any]]:
    """mediasoup's producers (``GET /producers``)."""
    from tests.integration.test_sfu import get
    return get(port, "/producers")  # type: ignore[return-value]


def two_agents(etcd, agent_factory, rtsp_camera, port: int, streams: dict) -> dict[str, AgentProcess]:
    from tests.integration.test_sfu import sfu_section
    agents = {}
    with_urls = {sid: {"url": rtsp_camera.url(sid), **s} for sid, s in streams.items()}
    for name in ("a", "b"):
        cfg = fleet_config(etcd.endpoints, name, with_urls)
        cfg["mediasoup"] = sfu_section(port, managed=False)
        agents[name] = agent_factory(cfg, name=name)
    start_all(list(agents.values()))
    return agents


def restarts(agents: dict[str, AgentProcess]) -> int:
    return sum(s["restarts"] for a in agents.values() for s in a.streams().values())


def test_two_agents_on_one_sfu_delete_none_of_each_others_producers(etcd, rtsp_camera, agent_factory, sfu):
    """Issue 16 item 11: each agent touches only its own producers (0 deletions, 0 restarts)."""
    streams = {"cam1": {"placement": {"prefer": ["a"]}}, "cam2": {"placement": {"prefer": ["a"]}},
               "cam3": {"placement": {"prefer": ["b"]}}, "cam4": {"placement": {"prefer": ["b"]}}}
    agents = two_agents(etcd, agent_factory, rtsp_camera, sfu.port, streams)
    wait_for(lambda: running(agents["a"]) == {"cam1", "cam2"} and running(agents["b"]) == {"cam3", "cam4"}, 45,
             "each agent running its two streams")
    time.sleep(5)  # both agents' first reconciles are over
    deleted_before, restarts_before = len(deleted(sfu)), restarts(agents)
    time.sleep(WATCH)
    closed = len(deleted(sfu)) - deleted_before
    restarted = restarts(agents) - restarts_before
    print(f"\ntwo agents on one SFU, {WATCH:g}s: {closed} producers deleted, {restarted} stream restarts")
    assert (closed, restarted) == (0, 0), (deleted(sfu), agents["a"].log()[-3000:])
    wait_for(lambda: live(agents["a"]) == {"cam1", "cam2"} and live(agents["b"]) == {"cam3", "cam4"}, 15,
             "every stream live through the shared SFU")
    owners = etcd_owners(etcd.endpoints[0])
    by_stream = {p["stream_id"]: p for p in listed(sfu.port)}
    assert len(listed(sfu.port)) == 4
    assert {sid: (p["node"], p["epoch"]) for sid, p in by_stream.items()} == owners


def test_a_new_owner_never_adopts_a_paused_owners_producer(etcd, rtsp_camera, agent_factory, sfu):
    """Issue 16 item 12: B takes cam1 over from a SIGSTOPped A: it makes its own producer
    (A's is deleted under B's higher epoch), and A, resumed, deletes nothing of B's."""
    agents = two_agents(etcd, agent_factory, rtsp_camera, sfu.port, {"cam1": {"placement": {"prefer": ["a"]}}})
    a, b = agents["a"], agents["b"]
    wait_for(lambda: live(a) == {"cam1"}, 45, "cam1 live on a")
    [old] = listed(sfu.port)
    a.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: live(b) == {"cam1"}, 20, "cam1 live on b while a is paused")
        epoch_b = etcd_owners(etcd.endpoints[0])["cam1"][1]
        [new] = listed(sfu.port)
        assert new["producer_id"] != old["producer_id"], "b adopted the paused owner's producer"
        assert (new["node"], new["epoch"]) == ("b", epoch_b)
        assert old["node"] == "a"
    finally:
        a.signal(signal.SIGCONT)
    wait_for(lambda: not running(a) and a.snapshot()["fleet"]["etcd_up"], 20, "a back, running nothing")
    time.sleep(6)  # a few of a's polls and plans
    closed = deleted(sfu)
    assert [p["producer_id"] for p in listed(sfu.port)] == [new["producer_id"]], "b's producer was deleted"
    assert [d for d in closed if d["producer_id"] == new["producer_id"]] == []
    assert [d["by_epoch"] for d in closed if d["producer_id"] == old["producer_id"]] == [epoch_b]
    [counter] = receiving(sfu.port, ["cam1"]).values()  # mediasoup still counts b's RTP
    assert counter["packets_lost"] < 200, counter
    assert live(b) == {"cam1"}


def test_a_handback_through_a_shared_sfu_keeps_the_new_owners_producer(etcd, rtsp_camera, agent_factory, sfu):
    """The preferred node a returns: it warms up with its own producer, keeps it (re-fenced
    under its new epoch, no restart) once it owns cam1, and b closes its own producer."""
    from tests.integration.test_sfu import sfu_section
    cfg = {n: fleet_config(etcd.endpoints, n, {"cam1": {"url": rtsp_camera.url("cam1"),
                                                        "placement": {"prefer": ["a", "b"]}}}) for n in ("a", "b")}
    for c in cfg.values():
        c["mediasoup"] = sfu_section(sfu.port, managed=False)
    b = agent_factory(cfg["b"], name="b").start()
    wait_for(lambda: live(b) == {"cam1"}, 45, "cam1 live on b while a is away")
    [b_producer] = listed(sfu.port)
    a = agent_factory(cfg["a"], name="a").start()
    wait_for(lambda: etcd_owners(etcd.endpoints[0]).get("cam1", ("",))[0] == "a" and live(a) == {"cam1"}
             and not running(b), 10 * 2.0 + 40, "cam1 handed back to a")
    time.sleep(3)  # a few polls of both agents
    [producer] = listed(sfu.port)
    assert (producer["node"], producer["epoch"]) == ("a", etcd_owners(etcd.endpoints[0])["cam1"][1])
    assert a.streams()["cam1"]["producer"]["id"] == producer["producer_id"]
    assert f"keeps {producer['producer_id']}, now under epoch {producer['epoch']}" in a.log()  # the warming one
    assert a.streams()["cam1"]["restart_reasons"].get("sfu", 0) <= 1, a.streams()["cam1"]["restart_reasons"]
    assert [(d["producer_id"], d["node"]) for d in deleted(sfu)] == [(b_producer["producer_id"], "b")]
    assert live(a) == {"cam1"}


def test_a_producer_of_a_stream_missing_from_one_nodes_file_is_left_to_its_owner(etcd, rtsp_camera, agent_factory,
                                                                                sfu):
    """During a rolling config change a's file has cam2 and b's not yet; an operator registered a
    producer of their own (no node, no epoch).  b closes neither: a's live producer of cam2 is a's (closing it
    restarts a's FFmpeg every poll), and one whose owner b cannot tell is not b's."""
    from tests.integration.test_sfu import post, sfu_section
    post(sfu.port, "/producers", {"stream_id": "operator-feed", "ssrc": 4242, "payload_type": 96})
    agents = {}
    for name, sids in (("a", ("cam1", "cam2")), ("b", ("cam1",))):
        streams = {sid: {"url": rtsp_camera.url(sid), "placement": {"prefer": ["a"]}} for sid in sids}
        cfg = fleet_config(etcd.endpoints, name, streams)
        cfg["mediasoup"] = sfu_section(sfu.port, managed=False)
        agents[name] = agent_factory(cfg, name=name)
    start_all(list(agents.values()))
    wait_for(lambda: live(agents["a"]) == {"cam1", "cam2"}, 45, "a running both streams live")
    restarts_before = restarts(agents)
    time.sleep(4 * 2 + 1)  # four polls of each agent (2 s) after a's producers exist
    assert deleted(sfu) == [], (deleted(sfu), agents["b"].log()[-2000:])
    assert {p["stream_id"] for p in listed(sfu.port)} == {"cam1", "cam2", "operator-feed"}
    assert restarts(agents) == restarts_before


def test_an_agent_that_cannot_reach_etcd_closes_no_other_nodes_producer(etcd, rtsp_camera, agent_factory, sfu):
    """b starts while etcd is unreachable (its endpoint is closed), so it knows no live node;
    a's producer of cam2 (not in b's file yet) must not look like a dead node's to b."""
    from camera.fixture import free_port
    from tests.integration.test_sfu import sfu_section
    agents = {}
    for name, sids, endpoints in (("a", ("cam1", "cam2"), etcd.endpoints),
                                  ("b", ("cam1",), [f"http://127.0.0.1:{free_port()}"])):
        streams = {sid: {"url": rtsp_camera.url(sid), "placement": {"prefer": ["a"]}} for sid in sids}
        cfg = fleet_config(endpoints, name, streams)
        cfg["mediasoup"] = sfu_section(sfu.port, managed=False)
        agents[name] = agent_factory(cfg, name=name)
    agents["a"].start()
    wait_for(lambda: live(agents["a"]) == {"cam1", "cam2"}, 45, "a running both streams live")
    agents["b"].start()
    time.sleep(4 * 2 + 1)  # four polls of b's (2 s)
    assert deleted(sfu) == [], agents["b"].log()[-2000:]
    assert {p["stream_id"] for p in listed(sfu.port)} == {"cam1", "cam2"}


def test_an_sfu_restart_during_a_handback_ends_with_one_producer_of_the_new_owner(etcd, rtsp_camera,
                                                                                   agent_factory):
    """The shared SFU restarts (all producers lost) while a warms up to take cam1 back from b.
    In the end the SFU holds one producer of cam1, a's under a's epoch, and a records it live."""
    from camera.fixture import free_port
    from tests.integration.test_sfu import sfu_section
    port = free_port()
    sfu = start_real_sfu(port)
    try:
        cfg = {n: fleet_config(etcd.endpoints, n, {"cam1": {"url": rtsp_camera.url("cam1"),
                                                            "placement": {"prefer": ["a", "b"]}}}) for n in ("a", "b")}
        for c in cfg.values():
            c["mediasoup"] = sfu_section(port, managed=False)
        b = agent_factory(cfg["b"], name="b").start()
        wait_for(lambda: live(b) == {"cam1"}, 45, "cam1 live on b while a is away")
        a = agent_factory(cfg["a"], name="a").start()
        wait_for(lambda: any(p["node"] == "a" for p in listed(port)), 30, "a warming with its producer")
        os.killpg(sfu.pid, signal.SIGKILL)  # node and its mediasoup worker: every producer gone
        sfu.wait(5)
        sfu = start_real_sfu(port)
        wait_for(lambda: etcd_owners(etcd.endpoints[0]).get("cam1", ("",))[0] == "a" and live(a) == {"cam1"}
                 and not running(b), 10 * 2.0 + 60, "cam1 handed back to a through the restarted SFU")
        time.sleep(5)  # a few polls of both agents
        now = listed(port)
        assert [(p["node"], p["epoch"]) for p in now] == [("a", etcd_owners(etcd.endpoints[0])["cam1"][1])], \
            (now, b.log()[-1500:])
        assert a.streams()["cam1"]["producer"]["id"] == now[0]["producer_id"]
    finally:
        os.killpg(sfu.pid, signal.SIGKILL)
        sfu.wait(5)
