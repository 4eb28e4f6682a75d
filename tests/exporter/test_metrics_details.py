"""Details of /v2/metrics (issue 18, item 20): no ``*_created`` series doubling the counters
and histograms."""
from __future__ import annotations


async def test_no_created_series(client):
    await client.get("/v2/health/system")  # the API's own counter and histogram get samples
    text = await (await client.get("/v2/metrics")).text()
    assert "vas_api_requests_total{" in text and "vas_api_request_duration_seconds_bucket{" in text
    assert [line for line in text.splitlines() if "_created" in line] == []
