"""``vas_api_requests_total`` and ``vas_api_request_duration_seconds``: counted in plain lists.

Every request is counted, a load balancer's health check too, so the count must cost
little next to the check itself: client_python's Counter and Histogram take a lock per
value (three per request: the count, the bucket, the sum), ~5 µs on the test machine
against a check's ~40 µs.  Here a request adds to a list, all on the event loop, and a
scrape writes the text itself, byte for byte what those instruments wrote
(tests/exporter/test_metrics_details.py): ``generate_latest`` over the same families
cost ~0.4 ms a scrape for a handful of routes (it checks and escapes every label of
every sample), the text costs a tenth of that.
"""
from __future__ import annotations

from bisect import bisect_left

from prometheus_client.utils import floatToGoString

from .streamtext import escape, header

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, float("inf"))
COUNT = ("vas_api_requests", "counter", "API requests served.")
LATENCY = ("vas_api_request_duration_seconds", "histogram", "API request latency.")
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

    def text(self) -> bytes:
        """The two families' exposition text, in the order the instruments were registered."""
        counts, latencies = [], []
        for (handler, method, code), row in self._rows.items():
            front = f'code="{code}",handler="{escape(handler)}"'  # labels in name order, as generate_latest writes them
            back = f'method="{escape(method)}"'
            labels = f"{front},{back}"
            counts.append(f"vas_api_requests_total{{{labels}}} {floatToGoString(row[0])}\n")
            cumulative = 0.0
            for le, n in zip(_LE, row[2:]):
                cumulative += n
                latencies.append(f'vas_api_request_duration_seconds_bucket{{{front},le="{le}",{back}}} '
                                 f"{floatToGoString(cumulative)}\n")
            latencies.append(f"vas_api_request_duration_seconds_count{{{labels}}} {floatToGoString(cumulative)}\n")
            latencies.append(f"vas_api_request_duration_seconds_sum{{{labels}}} {floatToGoString(row[1])}\n")
        return "".join((header(*COUNT), *counts, header(*LATENCY), *latencies)).encode()
