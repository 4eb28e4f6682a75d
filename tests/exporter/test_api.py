"""The /v2 API: every endpoint and every error path, against a real snapshot file
(and, where the agent is involved, a control socket nobody answers on)."""
from __future__ import annotations

import json
import shutil
import subprocess

import jsonschema
import pytest

from exporter.openapi import spec

from .conftest import PASSWORD, snapshot_dict, stream

GETS = ["/v2/health/system", "/v2/health/streams/cam1", "/v2/health/ingestion", "/v2/health/producers",
        "/v2/health/consumers", "/v2/health/recordings", "/v2/health/recordings/cam1"]


def schema_for(path: str, method: str, status: int) -> dict:
    doc = spec()
    template = next(p for p in doc["paths"] if _matches(p, path))
    content = doc["paths"][template][method]["responses"][str(status)].get("content", {})
    return content.get("application/json", {}).get("schema")


def _matches(template: str, path: str) -> bool:
    a, b = template.split("/"), path.split("?")[0].split("/")
    return len(a) == len(b) and all(x == y or x.startswith("{") for x, y in zip(a, b))


@pytest.mark.parametrize("path", GETS)
async def test_reads_answer_json_matching_the_document(client, path):
    resp = await client.get(path)
    assert resp.status == 200
    body = await resp.json()
    jsonschema.validate(body, schema_for(path, "get", 200))
    assert PASSWORD not in json.dumps(body)


@pytest.mark.parametrize("path", ["/v2/health/streams/nope", "/v2/health/recordings/nope",
                                  "/v2/health/consumers/c404", "/v2/nothing", "/v2/health/streams/",
                                  "/console/", "/console/a%0A", "/%0A", "/v2/nothing%0Aelse"])
async def test_unknown_ids_and_paths_are_404_json(client, path):
    resp = await client.get(path)  # (a newline in a path: found by the HTTP fuzz, once text/plain)
    assert resp.status == 404 and "error" in await resp.json()


@pytest.mark.parametrize("method,path,allow", [("POST", "/v2/health/system", "GET,HEAD"),
                                               ("DELETE", "/readyz", "GET,HEAD,OPTIONS"),
                                               ("PUT", "/v2/health/consumers/c1/heartbeat", "POST"),
                                               ("POST", "/console/app.js", "GET,HEAD")])
async def test_wrong_method_is_405_json_naming_the_methods_the_path_has(client, method, path, allow):
    resp = await client.request(method, path)
    assert resp.status == 405 and (await resp.json())["allow"] == allow == resp.headers["Allow"]


async def test_system_says_down_degraded_or_healthy(client, node):
    assert (await (await client.get("/v2/health/system")).json())["status"] == "healthy"
    node.write(snapshot_dict([stream("a", "error")]))
    assert (await (await client.get("/v2/health/system")).json())["status"] == "degraded"
    node.age(60)
    body = await (await client.get("/v2/health/system")).json()
    assert body["status"] == "down" and body["agent"]["up"] is False


async def test_producers_and_consumers_come_from_the_snapshot(client, node):
    producer = {"id": "p1", "rtp_host": "127.0.0.1", "rtp_port": 4000, "ssrc": 7, "payload_type": 96,
                "since": 1.0, "packets": 10, "bytes": 100, "score": 10, "confirmed": True}
    consumers = {"active": [{"consumer_id": "c1", "stream_id": "cam1", "client_id": "viewer", "created_at": 1.0,
                             "last_heartbeat": 2.0}], "per_stream": {"cam1": 1}, "ended": {"stale": 2},
                 "session_duration_seconds": {"buckets": [[10.0, 1], ["+Inf", 2]], "sum": 50.0, "count": 2}}
    node.write(snapshot_dict([stream("cam1", producer=producer)], sfu={"state": "up"}, consumers=consumers))
    assert (await (await client.get("/v2/health/producers")).json())["producers"][0]["stream_id"] == "cam1"
    assert (await (await client.get("/v2/health/consumers")).json())["count"] == 1
    one = await (await client.get("/v2/health/consumers/c1")).json()
    assert one["consumer_id"] == "c1" and "client_id" not in one  # a viewer's identity stays on the host


MUTATIONS = [("POST", "/v2/health/consumers/c1/heartbeat", "heartbeat"),
             ("POST", "/v2/health/recordings/cleanup?retention_days=3", "admin"),
             ("POST", "/v2/health/recordings/cam1/cleanup?retention_days=3", "admin"),
             ("DELETE", "/v2/streams/cam1/consumers/c1", "admin")]


@pytest.mark.parametrize("method,path,scope", MUTATIONS)
async def test_no_mutation_without_a_valid_token_of_the_right_scope(client, node, method, path, scope):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {node.admin}"},
                    {"Authorization": "Bearer"}):
        resp = await client.request(method, path, headers=headers)
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    if scope == "admin":
        resp = await client.request(method, path, headers={"Authorization": f"Bearer {node.heartbeat}"})
        assert resp.status == 403 and "scope heartbeat" in (await resp.json())["error"]
    # A valid token: the agent is not running here, so 503 JSON, never a trace.
    for token in {node.admin, node.heartbeat if scope == "heartbeat" else node.admin}:
        resp = await client.request(method, path, headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 503 and "does not answer" in (await resp.json())["error"]


@pytest.mark.parametrize("value", ["x", "-1", "0", "1e9", "nan", ""])
async def test_bad_retention_days_is_400_naming_it(client, node, value):
    resp = await client.post(f"/v2/health/recordings/cleanup?retention_days={value}",
                             headers={"Authorization": f"Bearer {node.admin}"})
    body = await resp.json()
    assert resp.status == 400 and body["parameter"] == "retention_days"


async def test_cleanup_of_an_unknown_stream_is_404(client, node):
    resp = await client.post("/v2/health/recordings/nope/cleanup", headers={"Authorization": f"Bearer {node.admin}"})
    assert resp.status == 404


async def test_tokens_apply_at_the_next_request_without_a_reload(client, node):
    from agent import tokens
    fresh = tokens.add(node.tokens_file, "late", "admin")
    path = "/v2/health/recordings/cleanup"
    # Accepted at once (503: no agent runs here); removed: refused at once.
    assert (await client.post(path, headers={"Authorization": f"Bearer {fresh}"})).status == 503
    tokens.remove(node.tokens_file, "late")
    assert (await client.post(path, headers={"Authorization": f"Bearer {fresh}"})).status == 401


async def test_metrics_are_clean_for_promtool_and_bounded(client, node):
    recording = {"enabled": True, "retention_seconds": 86400.0, "segment_count": 3, "total_bytes": 300,
                 "oldest_segment_at": 1.0, "newest_segment_at": 2.0, "future_dated": {"segments": 4, "bytes": 40},
                 "deleted": {"age": {"segments": 5, "bytes": 500}, "disk": {"segments": 1, "bytes": 100}}}
    node.write(snapshot_dict([stream("cam1", recording=recording), stream("cam2", "error")],
                             sfu={"state": "up", "restart_reasons": {"exit": 1}},
                             recordings={"disk_pressure": {"passes": {"floor": 2}, "last": None},
                                         "floor_unreachable": 1}))
    text = await (await client.get("/v2/metrics")).text()
    assert 'vas_retention_disk_pressure_passes_total{reason="floor"} 2.0' in text
    assert 'vas_retention_disk_pressure_passes_total{reason="emergency"} 0.0' in text
    assert "vas_recording_floor_unreachable 1.0" in text
    assert 'vas_streams{state="live"} 1.0' in text and 'vas_stream_up{stream="cam2"} 0.0' in text
    assert "vas_sfu_up 1.0" in text and "vas_agent_up 1.0" in text and 'vas_build_info{commit="' in text
    assert 'vas_recording_deleted_segments_total{reason="disk",stream="cam1"} 1.0' in text
    assert 'vas_recording_deleted_bytes_total{reason="age",stream="cam1"} 500.0' in text
    assert 'vas_recording_segments{stream="cam1"} 3.0' in text
    assert 'vas_recording_future_dated_segments{stream="cam1"} 4.0' in text
    assert "url" not in text and "10.0.0.5" not in text and PASSWORD not in text
    await client.get("/v2/health/streams/whatever-id-123")
    text = await (await client.get("/v2/metrics")).text()
    assert 'handler="/v2/health/streams/{stream_id}"' in text and "whatever-id-123" not in text
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing (Debian prometheus)"
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


async def test_the_openapi_document_covers_every_route(client):
    doc = await (await client.get("/v2/openapi.json")).json()
    from exporter.frame import UNMATCHED
    routes = {r.resource.canonical for r in client.server.app.router.routes()
              if r.resource is not None and r.resource.name != UNMATCHED}  # the catch-all: 404s and 405s
    assert routes == set(doc["paths"])
    assert doc["openapi"].startswith("3.")


async def test_a_snapshot_with_a_password_in_it_never_hands_the_password_out(client, node):
    """The agent writes the URL as ``admin:***@``; a snapshot written otherwise (an older agent,
    a hand-made file) must still not give a camera's password away, in the URL or in FFmpeg's
    last lines, which name its input."""
    cam = stream("cam1", url=f"rtsp://admin:{PASSWORD}@10.0.0.5/cam1",
                 last_error=[f"[rtsp @ 0x55] rtsp://admin:{PASSWORD}@10.0.0.5/cam1: 401 Unauthorized"])
    node.write(snapshot_dict([cam]))
    resp = await client.get("/v2/health/streams/cam1")
    body = await resp.json()
    assert resp.status == 200 and PASSWORD not in json.dumps(body)
    assert body["url"] == "rtsp://admin:***@10.0.0.5/cam1" and "admin:***@10.0.0.5" in body["last_error"][0]
