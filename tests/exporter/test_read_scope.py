"""Who may read what (issue 18, item 15): reads stay open by default but never show the
node's internals; ``exporter.require_read_token`` puts /v2/health/* behind a ``read`` token,
never the load balancers' routes."""
from __future__ import annotations

import time
from dataclasses import replace

import pytest

from agent import tokens
from agent.config.exporter import SettingsError, load
from exporter.app import create_app

from .conftest import snapshot_dict, stream
from .test_api import GETS

INTERNALS = ("/etc/vas/streams.yaml", "/run/vas", "deadbeefcafe", "http://127.0.0.1:3999/private-api",
             "viewer-alice", "/srv/private-recordings-root")
READS = [*GETS, "/v2/health/consumers/c1"]


def with_internals(node) -> None:
    data = snapshot_dict([stream("cam1")], root="/srv/private-recordings-root",
                         sfu={"configured": True, "state": "up", "api_url": "http://127.0.0.1:3999/private-api",
                              "restarts": 0},
                         consumers={"active": [{"consumer_id": "c1", "stream_id": "cam1", "client_id": "viewer-alice",
                                                "created_at": time.time(), "last_heartbeat": time.time()}],
                                    "per_stream": {"cam1": 1}, "ended": {}})
    data["config"]["sha256"] = "deadbeefcafe"
    data["agent"]["pid"] = 424242
    data["config"]["last_reload"] = {"ok": False, "at": time.time(),
                                     "error": ["/etc/vas/streams.yaml:3: streams.cam1.url: bad"]}
    node.write(data)


async def test_open_reads_leave_the_internals_out(client, node):
    with_internals(node)
    for path in READS:
        resp = await client.get(path)
        assert resp.status == 200, path
        text = await resp.text()
        assert [s for s in INTERNALS if s in text] == [], path
    system = await (await client.get("/v2/health/system")).json()
    assert "pid" not in system["agent"] and system["agent"]["status"] == "running"
    assert system["config"]["last_reload"]["ok"] is False and system["config"]["last_reload"]["errors"] == 1
    assert system["sfu"]["state"] == "up"
    assert (await (await client.get("/v2/health/consumers")).json())["consumers"][0]["consumer_id"] == "c1"


@pytest.fixture
async def guarded(aiohttp_client, node):
    node.read = tokens.add(node.tokens_file, "grafana", "read")
    return await aiohttp_client(create_app(replace(node.settings, require_read_token=True)))


@pytest.mark.parametrize("path", READS)
async def test_require_read_token_guards_every_health_read(guarded, node, path):
    with_internals(node)
    resp = await guarded.get(path)
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await guarded.get(path, headers={"Authorization": f"Bearer {node.heartbeat}"})).status == 403
    assert (await guarded.head(path)).status == 401
    for token in (node.read, node.admin):
        assert (await guarded.get(path, headers={"Authorization": f"Bearer {token}"})).status == 200


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/healthz"])
async def test_load_balancer_routes_never_need_a_token(guarded, path):
    for method in ("GET", "HEAD", "OPTIONS"):
        assert (await guarded.request(method, path)).status == 200, (method, path)


async def test_a_read_token_changes_nothing(guarded, node):
    resp = await guarded.post("/v2/health/recordings/cleanup", headers={"Authorization": f"Bearer {node.read}"})
    assert resp.status == 403
    resp = await guarded.post("/v2/health/consumers/c1/heartbeat", headers={"Authorization": f"Bearer {node.read}"})
    assert resp.status == 403


def test_the_key_is_read_and_checked(tmp_path):
    cfg = tmp_path / "streams.yaml"
    cfg.write_text("version: 1\nstreams: {}\nexporter:\n  require_read_token: true\n")
    assert load(cfg).require_read_token is True
    cfg.write_text("version: 1\nstreams: {}\nexporter:\n  listen: 127.0.0.1:9\n  require_read_token: yes please\n")
    with pytest.raises(SettingsError) as err:
        load(cfg)
    assert f"{cfg}:5: exporter.require_read_token: expected true or false" in str(err.value)
    cfg.write_text("version: 1\nstreams: {}\n")
    assert load(cfg).require_read_token is False


def test_vasctl_adds_a_read_token(tmp_path):
    from agent.cli import vasctl_main
    path = tmp_path / "tokens"
    assert vasctl_main(["token", "--tokens-file", str(path), "add", "grafana", "--scope", "read"]) == 0
    assert [(t.name, t.scope) for t in tokens.load(path).tokens] == [("grafana", "read")]


#: What a real FFmpeg wrote when its recordings filesystem went read-only (demo config, HLS muxer).
FFMPEG_ROFS = ["[hls @ 0x55aa7efd8c80] Failed to open file '/srv/private-recordings-root/cam1/cam1_000000.ts.tmp'",
               "[hls @ 0x55aa7efd8c80] failed to rename file /srv/private-recordings-root/cam1/index.m3u8.tmp to "
               "/srv/private-recordings-root/cam1/index.m3u8: Read-only file system",
               "cannot open /run/vas/progress/cam1: No such file or directory",
               "/etc/vas/streams.yaml: something the config said"]


async def test_child_errors_name_no_host_path(client, node):
    """FFmpeg's and the SFU's stderr lines name the recordings root, the runtime dir and the config's
    path (a read-only recordings filesystem does): the open API shows them as placeholders."""
    data = snapshot_dict([stream("cam1", last_error=FFMPEG_ROFS)], root="/srv/private-recordings-root",
                         sfu={"configured": True, "state": "error", "restarts": 2,
                              "last_error": ["Error: EACCES: permission denied, open '/run/vas/sfu.log'"]})
    node.write(data)
    for path in ("/v2/health/ingestion", "/v2/health/streams/cam1", "/v2/health/system"):
        text = await (await client.get(path)).text()
        assert [s for s in ("/srv/private-recordings-root", "/run/vas", "/etc/vas/streams.yaml") if s in text] == [], \
            (path, text)
    shown = (await (await client.get("/v2/health/streams/cam1")).json())["last_error"]
    assert shown[0] == "[hls @ 0x55aa7efd8c80] Failed to open file '<recordings>/cam1/cam1_000000.ts.tmp'"
    assert shown[2] == "cannot open <runtime_dir>/progress/cam1: No such file or directory"
    system = await (await client.get("/v2/health/system")).json()
    assert system["sfu"]["last_error"] == ["Error: EACCES: permission denied, open '<runtime_dir>/sfu.log'"]


@pytest.mark.parametrize("damage", ["missing", "corrupt", "a directory"])
async def test_a_missing_or_broken_snapshot_is_reported_without_its_path(client, node, damage):
    """With the agent down, every /v2/health answer and /readyz (which never needs a token) says
    the snapshot is missing or broken without its path ("/run/vas/state.json"): the runtime
    directory the rest of the API leaves out."""
    import shutil

    from agent import snapshot
    path = node.runtime / snapshot.SNAPSHOT_NAME
    path.unlink()
    if damage == "corrupt":
        path.write_text('{"version": 1, "agent": ')
    elif damage == "a directory":
        path.mkdir()
    try:
        for route in ("/readyz", "/v2/health/system", "/v2/health/ingestion", "/v2/health/streams/cam1"):
            resp = await client.get(route)
            text = await resp.text()
            assert str(node.runtime) not in text and "state.json" not in text.replace("(state.json)", ""), \
                (route, text)
            assert resp.status in (200, 503) and ("snapshot" in text or "unreadable" in text), (route, text)
    finally:
        if path.is_dir():
            shutil.rmtree(path)


#: What agent/fleet/etcd.py really raised against an etcd endpoint that refused the node's user.
ETCD_REFUSED = "EtcdError: etcd http://10.255.255.1:2379: cannot authenticate as 'vasnode': 404"


async def test_readyz_says_why_the_node_is_cut_off_without_etcds_address_or_user(guarded, node):
    """/readyz (open to anyone, token option or not) does not quote the etcd error, which names
    the cluster's endpoint and the etcd user."""
    data = snapshot_dict([stream("cam1")])
    data["fleet"] = {"node": "a", "etcd_up": False, "last_error": ETCD_REFUSED, "nodes": {}, "owners": {}}
    node.write(data)
    resp = await guarded.get("/readyz")
    text = await resp.text()
    assert resp.status == 503 and "10.255.255.1" not in text and "vasnode" not in text, text
    check = next(c for c in (await resp.json())["checks"] if c["check"] == "etcd_up")
    assert check["ok"] is False and check["error"].startswith("EtcdError (the reason: vasctl status")


async def test_the_sfus_pid_is_left_out_like_the_agents(client, node):
    """/v2/health/system leaves out the SFU's pid as it does the agent's (docs/api.md lists the
    SFU's state, since, restarts, last exit and error lines only)."""
    node.write(snapshot_dict([stream("cam1")], sfu={"configured": True, "managed": True, "state": "up",
                                                    "pid": 424243, "pid_started_at": 1.0, "restarts": 0}))
    system = await (await client.get("/v2/health/system")).json()
    assert system["sfu"]["state"] == "up" and "pid" not in system["sfu"], system["sfu"]


def test_check_says_whether_reads_need_a_token(tmp_path):
    """install.sh warns about open reads on all interfaces from this line; with the option on it must not."""
    import subprocess
    import sys
    from pathlib import Path
    for flag, said in ((False, "reads open"), (True, "reads need a read token")):
        conf = tmp_path / f"streams-{flag}.yaml"
        option = str(flag).lower()
        conf.write_text(f"version: 1\nexporter: {{listen: '0.0.0.0:8080', require_read_token: {option}}}\n"
                        "streams: {a: {url: 'rtsp://h/x'}}\n")
        out = subprocess.run([str(Path(sys.executable).parent / "vas-exporter"), "--config", str(conf), "--check"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and said in out.stdout and "listen 0.0.0.0:8080" in out.stdout, out
