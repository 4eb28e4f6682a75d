"""Each route's frame (exporter/frame.py) against what the middleware before it gave: a hostile
review of 21954ca found each of these; the first three failed at 21954ca."""
from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from exporter.app import create_app


async def raw(port: int, head: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """One request as sent (no client library to normalise its target): status line, headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    top, _, body = data.partition(b"\r\n\r\n")
    status, *lines = top.split(b"\r\n")
    fields = (line.partition(b":") for line in lines)
    return status, {k.decode().lower(): v.strip().decode() for k, _, v in fields}, body


@pytest.mark.parametrize("head", [b"OPTIONS * HTTP/1.1"])  # (GET * and the like: the parser's 400)
async def test_a_target_with_no_slash_is_answered_and_counted_by_the_frame(aiohttp_server, node, head):
    """``*`` (``OPTIONS *``) matches no ``/`` pattern: the last resource takes any path (the
    middleware once answered it JSON, no-store, counted as ``unmatched``)."""
    server = await aiohttp_server(create_app(node.settings))
    status, headers, body = await raw(server.port, head)
    assert status.startswith(b"HTTP/1.1 404") and headers.get("content-type", "").startswith("application/json")
    assert headers.get("cache-control") == "no-store" and b'"error"' in body
    _, _, metrics = await raw(server.port, b"GET /v2/metrics HTTP/1.1")
    method = head.split()[0].decode()
    assert f'vas_api_requests_total{{code="404",handler="unmatched",method="{method}"}} 1.0'.encode() in metrics


@pytest.mark.parametrize("head", [b"GET http://x HTTP/1.1", b"CONNECT x:443 HTTP/1.1"])
async def test_a_target_with_no_path_at_all_gets_aiohttps_own_404_as_docs_api_says(aiohttp_server, node, head):
    """An absolute URL with no path and an authority (``CONNECT``) reach no route (aiohttp's
    router looks for none when the path is empty): like the parser's 400, aiohttp answers
    them itself, a plain-text 404 with no detail, not counted (docs/api.md, Errors).  Pinned,
    so that an aiohttp that changes it is noticed; the node serves on."""
    server = await aiohttp_server(create_app(node.settings))
    status, headers, body = await raw(server.port, head)
    assert status.startswith(b"HTTP/1.1 404") and body == b"404: Not Found"
    status, _, _ = await raw(server.port, b"GET /readyz HTTP/1.1")
    assert status.startswith(b"HTTP/1.1 200")


async def test_routes_with_a_pattern_are_counted_under_their_canonical_template(client):
    """The handler label was the resource's canonical template (the OpenAPI path), never the
    regex the route was added with: dashboards and alerts select on it."""
    await client.get("/console/app.js")
    await client.get("/v2/recordings/cam1/segments/a.ts")
    text = await (await client.get("/v2/metrics")).text()
    assert 'handler="/console/{path}"' in text and 'handler="/v2/recordings/{stream_id}/segments/{name}"' in text
    assert ":.+}" not in text


@pytest.fixture
async def guarded(aiohttp_client, node):
    return await aiohttp_client(create_app(replace(node.settings, require_read_token=True)))


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("path", ["/v2/health/nothing", "/v2/health/", "/v2/health/system/",
                                  "/v2/health/consumers/c1/heartbeat"])
async def test_the_read_scope_refuses_every_health_read_before_saying_what_exists(guarded, method, path):
    """With require_read_token, a GET/HEAD anywhere under /v2/health/ without a token was 401:
    an anonymous client could not tell a route (405 Allow: POST) from no route (404)."""
    assert (await guarded.request(method, path)).status == 401
