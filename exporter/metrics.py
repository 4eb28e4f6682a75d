"""Prometheus metrics at /v2/metrics over the cached snapshot.

The per-stream families (~12,000 samples at 500 streams) are written as text by
exporter/streamtext.py, which re-renders only the streams' values that changed;
the few node-wide families are built with client_python's custom collector
pattern.  The snapshot's part is kept until the snapshot changes; the processes'
CPU and RSS (sampled by the exporter, never by the agent: exporter/processes.py)
are taken off the scrape every 5 s while scrapes come; the few samples that
change on every scrape (agent up, snapshot age, API request metrics) live in a
second, small registry.
Label values are bounded: stream ids, states, reasons, route templates.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from agent.version import build

from .apistats import RequestStats
from .processes import ProcessSampler
from .recordings import RecordingStats
from .source import View
from .streamtext import RESTART_REASONS, STATES, StreamText, utf8

# A ``*_created`` series per counter and histogram would double them for nothing a query uses
# (and the families built from the snapshot have none): the exporter serves none at all.
disable_created_metrics()

__all__ = ["Metrics", "RESTART_REASONS", "STATES"]


class _Families:
    """A collector over families already built (to render them with generate_latest)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _latest(*groups: Iterable[Metric]) -> bytes:
    return generate_latest(_Families(chain(*groups)))


class Metrics:
    """Renders /v2/metrics; ``observe_request`` records the API's own latency."""

    def __init__(self, recordings: RecordingStats) -> None:
        self.recordings = recordings
        self.sampler = ProcessSampler()
        self.text = StreamText()
        self.requests = RequestStats()
        self._cached: tuple[tuple[int, bool, int], bytes] | None = None

    def observe_request(self, handler: str, method: str, code: int, seconds: float) -> None:
        """Count one request and its latency (exporter/apistats.py: cheap next to a health check)."""
        self.requests.observe(handler, method, code, seconds)

    def render(self, view: View, *, stale_after: float) -> bytes:
        """Three parts, each rendered only when its data changed: snapshot, processes, per-scrape."""
        cached = self.prepare(view)
        self.sampler.current(view.streams)
        live = _LiveCollector(view, stale_after, self.recordings).registry()
        # One join: each ``+`` would copy the ~600 KB snapshot part once more on every scrape.
        return b"".join((cached, self.sampler.text, generate_latest(live), self.requests.text()))

    def prepare(self, view: View) -> bytes:
        """The snapshot's part, rendered now unless it was for this snapshot (the app calls this
        when a new snapshot lands, so that the next scrape finds it done)."""
        key = (view.version, view.stale, self.recordings.version)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._render_snapshot(view))
        return self._cached[1]

    def _render_snapshot(self, view: View) -> bytes:
        """Everything that comes from the snapshot, in the families' order."""
        data, streams = view.data or {}, view.streams
        per_stream, producers, recording = self.text.render(streams, self.recordings.per_stream(streams), time.time())
        return b"".join((per_stream.encode(), _latest(_sfu_families(data, streams)), producers.encode(),
                         _latest(_consumer_families(data.get("consumers") or {})), recording.encode(),
                         _latest(_unsafe_family(data), _retention_problem_family(data), _config_families(data),
                                 _disk_pressure_families(data))))


class _LiveCollector:
    """The samples that change on every scrape: cheap, never cached."""

    def __init__(self, view: View, stale_after: float, recordings: RecordingStats) -> None:
        self.view, self.stale_after, self.recordings = view, stale_after, recordings

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return registry

    def collect(self) -> Iterator[Metric]:
        status = ((self.view.data or {}).get("agent") or {}).get("status")
        up = self.view.fresh(self.stale_after) and status not in (None, "stopped")
        yield _gauge("vas_agent_up", "1 while the agent's snapshot is fresh and it is not stopped.", value=float(up))
        yield _gauge("vas_agent_snapshot_age_seconds", "Seconds since the agent last proved it is alive.",
                     value=self.view.age if self.view.age is not None else float("nan"))
        yield _gauge("vas_agent_state_readable", "0 while the agent's snapshot file is there but unreadable.",
                     value=float(not self.view.unreadable))
        fs = self.recordings.filesystem(self.view)
        if fs is not None:
            yield _gauge("vas_recording_filesystem_free_bytes",
                         "Bytes free for the agent on the recordings filesystem (df's Avail).", value=fs.available)
            yield _gauge("vas_recording_filesystem_size_bytes", "Size of the recordings filesystem (df's Size).",
                         value=fs.size)
            yield _gauge("vas_recording_filesystem_used_bytes", "Bytes used on the recordings filesystem (df's Used).",
                         value=fs.used)
        info = GaugeMetricFamily("vas_build_info", "The version and commit of the running code.",
                                 labels=["version", "commit"])
        info.add_metric(list(build()), 1.0)
        yield info


def _gauge(name: str, doc: str, *, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _sfu_families(data: dict[str, Any], streams: list[dict[str, Any]]) -> Iterator[Metric]:
    """The SFU and producers by state (each producer's uptime is per-stream text)."""
    sfu = data.get("sfu")
    if sfu:
        yield _gauge("vas_sfu_up", "1 when the SFU answers its health check.", value=float(sfu.get("state") == "up"))
        restarts = CounterMetricFamily("vas_sfu_restarts", "SFU restarts by reason.", labels=["reason"])
        for reason, n in (sfu.get("restart_reasons") or {}).items():
            restarts.add_metric([utf8(reason)], n)
        yield restarts
    producers = GaugeMetricFamily("vas_producers", "SFU producers by state.", labels=["state"])
    states = {"confirmed": 0, "unconfirmed": 0}
    for s in streams:
        p = s.get("producer")
        if p:
            states["confirmed" if p.get("confirmed") else "unconfirmed"] += 1
    for name, n in states.items():
        producers.add_metric([name], n)
    yield producers


def _consumer_families(consumers: dict[str, Any]) -> Iterator[Metric]:
    active = consumers.get("active") or []
    states = GaugeMetricFamily("vas_consumers", "Viewer sessions by state.", labels=["state"])
    states.add_metric(["active"], len(active))
    yield states
    per = GaugeMetricFamily("vas_active_consumers", "Active viewer sessions.", labels=["stream"])
    for sid, n in (consumers.get("per_stream") or {}).items():
        per.add_metric([utf8(sid)], n)
    yield per
    hist = consumers.get("session_duration_seconds")
    if hist:
        family = HistogramMetricFamily("vas_consumer_session_duration_seconds", "Durations of ended sessions.")
        family.add_metric([], [(str(float(b)) if b != "+Inf" else "+Inf", n) for b, n in hist["buckets"]],
                          sum_value=hist["sum"])
        yield family


def _unsafe_family(data: dict[str, Any]) -> Iterator[Metric]:
    """Entries of the recordings root retention refuses (symlinks): never deleted from, never counted."""
    recordings = data.get("recordings")
    if isinstance(recordings, dict) and isinstance(recordings.get("unsafe_directories"), dict):
        yield _gauge("vas_recording_unsafe_directories",
                     "Entries of the recordings root retention does not apply to (symlinks).",
                     value=len(recordings["unsafe_directories"]))


def _retention_problem_family(data: dict[str, Any]) -> Iterator[Metric]:
    """1 while retention reports a problem (a hung mount, a root it cannot watch, a stuck call)."""
    recordings = data.get("recordings")
    if isinstance(recordings, dict) and "problem" in recordings:
        yield _gauge("vas_retention_problem",
                     "1 while retention reports a problem (recordings.problem; vasctl status says what).",
                     value=1 if recordings["problem"] else 0)


def _config_families(data: dict[str, Any]) -> Iterator[Metric]:
    last = (data.get("config") or {}).get("last_reload")
    yield _gauge("vas_config_last_reload_successful", "0 when the last reload was refused.",
                 value=float(last is None or bool(last.get("ok"))))
    started = (data.get("agent") or {}).get("started_at")
    success_at = last.get("at") if last and last.get("ok") else started
    if success_at and isinstance(success_at, (int, float)):  # the shape does not look inside last_reload
        yield _gauge("vas_config_last_reload_success_timestamp_seconds",
                     "When the config was last loaded successfully.", value=success_at)
    yield from _fleet_families(data.get("fleet"))
    lag = (data.get("agent") or {}).get("event_loop_lag_seconds")
    if lag:
        family = HistogramMetricFamily("vas_agent_event_loop_lag_seconds", "How late the agent's heartbeat ran.")
        family.add_metric([], [(str(float(b)) if b != "+Inf" else "+Inf", n) for b, n in lag["buckets"]],
                          sum_value=lag["sum"])
        yield family


def _fleet_families(fleet: dict[str, Any] | None) -> Iterator[Metric]:
    if fleet is None:  # single-host mode
        return
    yield _gauge("vas_fleet_etcd_up", "1 while this node reaches etcd and holds its lease.",
                 value=float(bool(fleet.get("etcd_up"))))
    owned = fleet.get("owned")  # a list of stream ids; the shape does not check it
    yield _gauge("vas_fleet_owned_streams", "Streams this node owns on etcd.",
                 value=float(len(owned) if isinstance(owned, list) else 0))
    takeovers = CounterMetricFamily("vas_fleet_takeovers", "Streams this node claimed, by reason.", labels=["reason"])
    for reason, n in sorted((fleet.get("takeovers") or {}).items()):
        takeovers.add_metric([utf8(reason)], n)
    yield takeovers
    renewal = fleet.get("lease_renewal_seconds")
    if renewal:
        family = HistogramMetricFamily("vas_fleet_lease_renewal_seconds", "Round trips of lease keepalives.")
        family.add_metric([], [(str(float(b)) if b != "+Inf" else "+Inf", n) for b, n in renewal["buckets"]],
                          sum_value=renewal["sum"])
        yield family


def _disk_pressure_families(data: dict[str, Any]) -> Iterator[Metric]:
    """The free-space floor's passes by reason (floor, emergency) and floors no filesystem can reach."""
    rec = data.get("recordings")
    if not isinstance(rec, dict) or "disk_pressure" not in rec:
        return
    passes = CounterMetricFamily("vas_retention_disk_pressure_passes",
                                 "Retention passes that deleted segments for free space, by reason.", labels=["reason"])
    counted = (rec.get("disk_pressure") or {}).get("passes") or {}
    for reason in ("floor", "emergency"):  # 0s too: increase() works from the start
        passes.add_metric([reason], counted.get(reason, 0))
    yield passes
    yield _gauge("vas_recording_floor_unreachable",
                 "Recording filesystems where min_free + min_free_hysteresis >= the filesystem's size.",
                 value=rec.get("floor_unreachable") or 0)
