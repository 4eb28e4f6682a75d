"""The fleet keys (cluster:, placement:) and what a reload does with them."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.config.loader import load
from agent.config.model import ConfigError
from agent.reload import plan_reload

BASE = """\
version: 1
cluster:
  node_name: rec-01
  etcd:
    endpoints: [http://127.0.0.1:2379, http://10.0.0.6:2379]
    username: vas
    password: ${ETCD_PASSWORD}
  lease_ttl: 3s
  max_streams: 8
  advertise_url: http://rec-01:8080
defaults:
  placement: {prefer: [rec-01, rec-02]}
streams:
  lobby:
    url: rtsp://10.0.0.5/s
  dock:
    url: rtsp://10.0.0.6/s
    placement: {prefer: [rec-02], allow: [rec-02, rec-03]}
"""
ENV = {"ETCD_PASSWORD": "Et-cd$ecret"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "streams.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text), ENV)
    return info.value.errors


def test_a_full_cluster_section_and_placement_merging(tmp_path):
    cfg = load(write(tmp_path, BASE), ENV)
    c = cfg.cluster
    assert c is not None and c.node_name == "rec-01" and c.lease_ttl == 3.0 and c.max_streams == 8
    assert c.etcd.endpoints == ("http://127.0.0.1:2379", "http://10.0.0.6:2379") and c.etcd.prefix == "/vas"
    assert c.etcd.password == "Et-cd$ecret" and "Et-cd$ecret" in cfg.secrets
    assert "Et-cd$ecret" not in repr(cfg) and "Et-cd$ecret" not in repr(c)
    assert cfg.streams["lobby"].placement.prefer == ("rec-01", "rec-02")
    assert cfg.streams["dock"].placement.prefer == ("rec-02",)
    assert cfg.streams["dock"].placement.allow == ("rec-02", "rec-03")


def test_a_minimal_cluster_section_takes_the_host_name(tmp_path, monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "Rec-07.example.com")
    cfg = load(write(tmp_path, "version: 1\ncluster: {etcd: {endpoints: [http://e:2379]}}\n"
                               "streams: {a: {url: rtsp://h/}}\n"), {})
    assert cfg.cluster is not None and cfg.cluster.node_name == "rec-07"
    assert cfg.cluster.lease_ttl == 3.0 and cfg.cluster.max_streams == 64 and cfg.cluster.advertise_url is None


def test_without_a_cluster_nothing_changes(tmp_path):
    cfg = load(write(tmp_path, "version: 1\nstreams: {a: {url: rtsp://h/}}\n"), {})
    assert cfg.cluster is None and cfg.streams["a"].placement.prefer == ()


@pytest.mark.parametrize("change, expected", [
    ("node_name: Rec_01", "5: cluster.node_name: node name must match"),
    ("lease_ttl: 0.5s", "5: cluster.lease_ttl: must be at least 1s, got '0.5s'"),
    ("lease_ttl: 2m", "5: cluster.lease_ttl: must be at most 1m, got '2m'"),
    ("max_streams: 0", "5: cluster.max_streams: expected a whole number from 1 to 10000, got 0"),
    ("advertise_url: rec-01:8080", "5: cluster.advertise_url: expected an http(s):// URL, got 'rec-01:8080'"),
    ("etcd: {endpoints: []}", "5: cluster.etcd.endpoints: expected a non-empty list"),
    ("etcd: {endpoints: [http://e:2379/v3]}", "5: cluster.etcd.endpoints.0: expected an http(s)://host:port URL"),
    ("etcd: {endpoints: ['http://u:p@e:2379']}", "cluster.etcd.endpoints.0: expected an http(s)://host:port"),
    ("etcd: {endpoints: [http://e:2379, http://e:2379]}", "5: cluster.etcd.endpoints.1: http://e:2379 is listed twice"),
    ("etcd: {endpoints: [http://e:2379], prefix: vas/}", "5: cluster.etcd.prefix: expected a key prefix like /vas"),
    ("etcd: {endpoints: [http://e:2379], username: vas}", "5: cluster.etcd.password: username and password go"),
    ("etcd: {endpoints: [http://e:2379], endpoint: x}", "5: cluster.etcd.endpoint: unknown key (did you mean"),
])
def test_cluster_errors_name_line_key_and_value(tmp_path, change, expected):
    head = "version: 1\nstreams: {a: {url: rtsp://h/}}\ncluster:\n"
    text = f"{head}  etcd: {{endpoints: [http://e:2379]}}\n  {change}\n"
    if change.startswith("etcd:"):
        text = f"{head}  node_name: a\n  {change}\n"
    found = errors(tmp_path, text)
    assert any(e.endswith(expected) or expected in e for e in found), found
    assert all(e.startswith(str(tmp_path / "streams.yaml") + ":") for e in found)


def test_placement_errors(tmp_path):
    found = errors(tmp_path, "version: 1\nstreams:\n  a:\n    url: rtsp://h/\n    placement: {prefer: [rec-01]}\n")
    assert found == [f"{tmp_path / 'streams.yaml'}:5: streams.a.placement: placement needs a cluster: section "
                     "(fleet mode)"]
    text = BASE.replace("placement: {prefer: [rec-02], allow: [rec-02, rec-03]}",
                        "placement: {prefer: [rec-01, rec-01], allow: [rec-02]}")
    found = errors(tmp_path, text)
    assert any("streams.dock.placement.prefer.1: rec-01 is listed twice" in e for e in found), found
    text = BASE.replace("placement: {prefer: [rec-02], allow: [rec-02, rec-03]}",
                        "placement: {prefer: [rec-01], allow: [rec-02]}")
    assert errors(tmp_path, text) == [f"{tmp_path / 'streams.yaml'}:18: streams.dock.placement.prefer.0: "
                                      "prefers rec-01, which allow excludes"]


def test_a_wrong_password_reference_never_shows_the_other_secrets(tmp_path):
    found = errors(tmp_path, BASE.replace("${ETCD_PASSWORD}", "${NOPE}"))
    assert found == [f"{tmp_path / 'streams.yaml'}:7: cluster.etcd.password: environment variable NOPE is not set"]


def test_reload_keeps_the_cluster_and_applies_placement_in_place(tmp_path):
    old = load(write(tmp_path, BASE), ENV)
    new = load(write(tmp_path, BASE.replace("lease_ttl: 3s", "lease_ttl: 5s")
                     .replace("prefer: [rec-02], allow", "prefer: [rec-03], allow")), ENV)
    plan = plan_reload(old, new)
    assert plan.needs_restart == ("cluster",) and plan.config.cluster == old.cluster
    assert plan.update == ("dock",) and plan.restart == () and plan.unchanged == ("lobby",)


def test_no_fleet_key_is_written_without_a_lease():
    """A key written with lease 0 (between a lost lease and the next session) would never expire:
    an owner for ever, and the camera never failing over.  Seen once under load: a planner that ran
    right after the keepalive found the lease gone reclaimed both streams with permanent keys."""
    import types

    import pytest

    from agent.fleet.etcd import LeaseLost
    from agent.fleet.node import Fleet
    with pytest.raises(LeaseLost):
        Fleet._held_lease(types.SimpleNamespace(lease=0))  # type: ignore[arg-type]
    assert Fleet._held_lease(types.SimpleNamespace(lease=0x2a)) == 0x2a  # type: ignore[arg-type]
