"""/v2/openapi.json and the exporter's real answers agree (issue 18, item 14).

Every exporter test already checks each answer it gets against the document (the
``aiohttp_client`` fixture in conftest.py). These tests go after the answers that
ordinary tests do not provoke: every status the agent's control socket could give a
change, a fleet stream owned elsewhere, and the HTTP parser's own plain-text 400.
"""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from exporter.openapi import spec

from .conftest import snapshot_dict, stream
from .openapi_check import problems

AGENT_STATUSES = (200, 204, 400, 401, 404, 409, 422, 500, 502, 503)
CHANGES = [("POST", "/v2/health/consumers/c1/heartbeat", "/v2/health/consumers/{consumer_id}/heartbeat"),
           ("DELETE", "/v2/streams/cam1/consumers/c1", "/v2/streams/{stream_id}/consumers/{consumer_id}"),
           ("POST", "/v2/health/recordings/cleanup", "/v2/health/recordings/cleanup"),
           ("POST", "/v2/health/recordings/cam1/cleanup", "/v2/health/recordings/{stream_id}/cleanup")]


@pytest.fixture
async def agent_answering(node):
    """The agent's side of the control socket, answering every request with ``status[0]`` (a
    real unix socket; the real agent's answers are covered by tests/integration)."""
    status = [200]

    async def answer(request: web.Request) -> web.Response:
        if status[0] == 204:
            return web.Response(status=204)
        body = {"ok": True, "consumer_id": "c1", "dry_run": True, "deleted_count": 0,
                "streams": {"cam1": {"stream_id": "cam1", "retention_days": 7.0, "deleted_count": 0,
                                     "deleted_size_mb": 0.0, "cutoff_time": None}}}
        return web.json_response(body if status[0] == 200 else {"error": f"status {status[0]}"}, status=status[0])
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, str(node.runtime / "agent.sock")).start()
    yield status
    await runner.cleanup()


@pytest.mark.parametrize("method,path,template", CHANGES)
async def test_every_agent_answer_to_a_change_is_a_documented_one(client, node, agent_answering, method, path,
                                                                 template):
    documented = set(spec()["paths"][template][method.lower()]["responses"])
    for status in AGENT_STATUSES:
        agent_answering[0] = status
        resp = await client.request(method, path, headers={"Authorization": f"Bearer {node.admin}"})
        assert str(resp.status) in documented, (status, resp.status, await resp.text())
        if resp.status >= 400:
            assert "error" in await resp.json()
    # (the client fixture also validated every body against its status's schema)


async def test_a_stream_owned_elsewhere_is_documented_with_or_without_the_owner_url(client, node):
    fleet = {"node": "a", "etcd_up": True, "owners": {"cam9": {"node": "b", "epoch": 3}},
             "nodes": {"b": {"url": None}}}
    node.write(snapshot_dict([stream("cam1")], fleet=fleet))
    resp = await client.get("/v2/health/streams/cam9", allow_redirects=False)
    assert resp.status == 200 and (await resp.json())["state"] == "elsewhere"
    fleet["nodes"]["b"]["url"] = "http://10.0.0.2:8080"
    node.write(snapshot_dict([stream("cam1")], fleet=fleet))
    resp = await client.get("/v2/health/streams/cam9", allow_redirects=False)
    assert resp.status == 307 and resp.headers["Location"].endswith("/v2/health/streams/cam9")


@pytest.mark.parametrize("raw,template", [
    (b"GET /v2/health/system HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", "/v2/health/system"),
    (b"POST /v2/health/recordings/cleanup HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
     "/v2/health/recordings/cleanup"),
    (b"GET /readyz HTTP/9.9\r\nHost: x\r\n\r\n", "/readyz"),
])
async def test_the_http_parsers_plain_text_400_is_documented(client, raw, template):
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(raw)
    await writer.drain()
    head = (await asyncio.wait_for(reader.read(4096), 10)).split(b"\r\n\r\n")[0].decode()
    writer.close()
    status = int(head.split()[1])
    content_type = next(line.split(":", 1)[1] for line in head.split("\r\n") if line.lower().startswith("content-type"))
    method = raw.split()[0].decode()
    assert status == 400 and problems(method, template, status, content_type, b"x") == [], head


def test_the_checker_catches_an_undocumented_answer():
    """The check the fixture applies is not vacuous."""
    assert problems("POST", "/v2/health/recordings/cleanup", 418, "application/json", b"{}")
    assert problems("GET", "/v2/health/streams/{stream_id}", 200, "application/json", b'{"id": "x"}')
    assert problems("GET", "/v2/health/system", 200, "text/html", b"<p>")
    assert not problems("GET", "/v2/health/streams/{stream_id}", 200, "application/json",
                        b'{"id": "x", "state": "elsewhere", "owner": {"node": "b"}}')
