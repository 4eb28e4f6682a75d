"""``vas_api_requests_total`` and ``vas_api_request_duration_seconds``: counted in plain lists.

Every request is counted, a load balancer's health check too, so the count must cost
little next to the check itself: client_python's Counter and Histogram take a lock per
value (three per request: the count, the bucket, the sum), ~5 µs on the test machine
against a check's ~40 µs.  Here a request adds to a list, all on the event loop, and
the families are built at scrape time, byte for byte what those instruments wrote
(tests/exporter/test_metrics_details.py).
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, float("inf"))
LABELS = ["handler", "method", "code"]
_LE = [floatToGoString(b) for b in BUCKETS]


class RequestStats:
    """Requests and their latency by (route template, method, status): bounded labels."""

    def __init__(self) -> None:
        #: key -> [count, sum of seconds, then one count per bucket (not cumulative)]
        self._rows: dict[tuple[str, str, int], list[float]] = {}

    def observe(self, handler: str, method: str, code: int, seconds: float) -> None:
        """Count one request that took ``seconds``."""
        row = self._rows.get((handler, method, code))
        if row is None:
            row = self._rows[(handler, method, code)] = [0, 0.0] + [0] * len(BUCKETS)
        row[0] += 1
        row[1] += seconds
        row[2 + bisect_left(BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds

    def collect(self) -> Iterator[Metric]:
        """The two families, in the order the instruments were registered."""
        count = CounterMetricFamily("vas_api_requests", "API requests served.", labels=LABELS)
        latency = HistogramMetricFamily("vas_api_request_duration_seconds", "API request latency.", labels=LABELS)
        for (handler, method, code), row in self._rows.items():
            labels = [handler, method, str(code)]
            count.add_metric(labels, row[0])
            cumulative, buckets = 0.0, []
            for le, n in zip(_LE, row[2:]):
                cumulative += n
                buckets.append((le, cumulative))
            latency.add_metric(labels, buckets, sum_value=row[1])
        yield count
        yield latency
