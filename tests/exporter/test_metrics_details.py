"""Details of /v2/metrics (issue 18, item 20): no ``*_created`` series doubling the counters
and histograms."""
from __future__ import annotations


async def test_no_created_series(client):
    await client.get("/v2/health/system")  # the API's own counter and histogram get samples
    text = await (await client.get("/v2/metrics")).text()
    assert "vas_api_requests_total{" in text and "vas_api_request_duration_seconds_bucket{" in text
    assert [line for line in text.splitlines() if "_created" in line] == []


def _families(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


async def test_no_family_comes_and_goes_between_scrapes(client, node):
    """Issue 18, item 16: what the first scrape after a snapshot serves, every later scrape serves
    (a new snapshot, the recording scan, a stale agent); a stale agent drops samples, not families."""
    from .conftest import snapshot_dict, stream
    first = _families(await (await client.get("/v2/metrics")).text())
    assert "vas_recording_filesystem_free_bytes" in first
    node.write(snapshot_dict([stream("cam1"), stream("cam2", "error")], root=str(node.runtime.parent)))
    second = _families(await (await client.get("/v2/metrics")).text())
    node.age(30)
    stale = _families(await (await client.get("/v2/metrics")).text())
    assert first - second == set() and first - stale == set(), (first - second, first - stale)


def test_request_counts_are_written_as_client_pythons_counter_and_histogram_wrote_them():
    """Issue 21, item 5: the API's own families are counted in plain lists (a lock per value
    cost a health check ~5 µs); what a scrape shows is byte for byte what the instruments
    showed for the same requests, bucket edges, large and tiny latencies included."""
    import random

    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from exporter.apistats import BUCKETS, RequestStats
    registry = CollectorRegistry(auto_describe=False)
    requests = Counter("vas_api_requests", "API requests served.", ["handler", "method", "code"], registry=registry)
    latency = Histogram("vas_api_request_duration_seconds", "API request latency.", ["handler", "method", "code"],
                        registry=registry, buckets=BUCKETS[:-1])
    stats = RequestStats()
    assert stats.text() == generate_latest(registry)  # no request yet: the headers only
    rng = random.Random(21)
    keys = [("/readyz", "GET", 200), ("/readyz", "OPTIONS", 503), ("/v2/metrics", "GET", 200),
            ("unmatched", "GET", 404)]
    seconds = [*BUCKETS[:-1], 0.0, 1e-9, 3.5, 1234.5, *(rng.expovariate(200) for _ in range(5000))]
    for value in seconds:
        handler, method, code = rng.choice(keys)
        requests.labels(handler, method, str(code)).inc()
        latency.labels(handler, method, str(code)).observe(value)
        stats.observe(handler, method, code, value)
    assert stats.text() == generate_latest(registry)


async def test_every_answer_is_counted_by_its_route_and_is_no_store_on_every_path(node):
    """Issue 21, item 5: each route's frame (exporter/frame.py) counts, frames and marks every answer, whichever way
    it leaves: a handler's return, a JSON error raised (a token refused), an aiohttp error made
    JSON (404, 405), an exception (500), HEAD and OPTIONS; only /v2/openapi.json may be cached.
    (A plain client: the conftest's would refuse the 500, which the API document rightly omits.)"""
    from dataclasses import replace

    from aiohttp.test_utils import TestClient, TestServer

    from exporter.app import create_app
    async with TestClient(TestServer(create_app(replace(node.settings, require_read_token=True)))) as client:
        await _every_path(client, node)


async def _every_path(client, node) -> None:
    """Each way out once, then each counted once under its template (404 and 405: ``unmatched``)."""
    from agent import tokens
    from exporter.app import CONTEXT
    read = {"Authorization": f"Bearer {tokens.add(node.tokens_file, 'grafana', 'read')}"}
    asked = [("GET", "/readyz", {}, 200, "/readyz"), ("HEAD", "/readyz", {}, 200, "/readyz"),
             ("OPTIONS", "/livez", {}, 200, "/livez"), ("GET", "/v2/health/system", {}, 401, "/v2/health/system"),
             ("GET", "/v2/health/streams/cam1", read, 200, "/v2/health/streams/{stream_id}"),
             ("GET", "/v2/nothing", {}, 404, "unmatched"), ("DELETE", "/readyz", {}, 405, "unmatched")]
    for method, path, headers, status, _ in asked:
        resp = await client.request(method, path, headers=headers)
        assert (resp.status, resp.headers.get("Cache-Control")) == (status, "no-store"), (method, path)
        if status >= 400:
            assert "error" in await resp.json()
    source = client.server.app[CONTEXT].health._source
    source.age = lambda: 1 / 0  # a bug in the handler
    resp = await client.get("/readyz")
    assert (resp.status, resp.headers.get("Cache-Control")) == (500, "no-store")
    assert (await resp.json())["error"].startswith("internal error")
    del source.age
    resp = await client.get("/v2/openapi.json")
    assert resp.status == 200 and "Cache-Control" not in resp.headers
    text = await (await client.get("/v2/metrics")).text()
    for method, _, _, status, template in [*asked, ("GET", "", {}, 500, "/readyz"),
                                           ("GET", "", {}, 200, "/v2/openapi.json")]:
        line = f'vas_api_requests_total{{code="{status}",handler="{template}",method="{method}"}} 1.0'
        assert line in text, line
