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
