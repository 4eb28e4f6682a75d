"""The per-stream families of /v2/metrics as exposition text, written without client_python.

At 500 streams these families are ~12,000 samples; prometheus_client builds a
Sample and escapes every label of every one on each render (tens of ms), and the
snapshot changes every few seconds.  Here each stream keeps its escaped label
prefixes, and the text of its state and restart counts keyed by those values
(8 of every 13 lines, which change only when the stream does).  The values that
move with nearly every snapshot (progress, recording figures, uptimes) are
written family by family in one pass over the streams each, which costs less
than checking them.  The series, labels and values are those prometheus_client's
``generate_latest`` gives for the same families; a number is spelled as Python
writes it (``1795302376.25``, ``60000000000.0``) where client_python would write
Go's exponent form (``1.79530237625e+09``): both parse to the same float
(tests/exporter/test_metrics_text.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client.utils import floatToGoString

from agent.snapshot_view import UNKNOWN
from agent.supervise.states import StreamState

from . import recordings

#: ``unknown``: the snapshot is stale, so nobody knows the stream's state now (agent down or hung).
STATES = [*(s.value for s in StreamState), UNKNOWN]
RESTART_REASONS = ("exit", "stall", "config", "manual", "sfu")

#: (name, type, help) in exposition order; counters are exposed with ``_total``.
STREAM = [("vas_stream_up", "gauge", "1 when the stream is live (0 while the agent state is stale)."),
          ("vas_stream_state", "gauge", "1 for the stream's current state."),
          ("vas_stream_uptime_seconds", "gauge", "Seconds the current process has run."),
          ("vas_stream_restarts", "counter", "Restarts by reason."),
          ("vas_stream_frames", "counter", "Frames of the current process."),
          ("vas_stream_fps", "gauge", "Frames per second FFmpeg reports."),
          ("vas_stream_output_bytes", "counter", "Bytes written by the current process."),
          ("vas_stream_last_progress_timestamp_seconds", "gauge", "When media last advanced.")]
PRODUCER = ("vas_producer_uptime_seconds", "gauge", "Seconds since the producer was made.")
RECORDING = [("vas_recording_bytes", "gauge", "Bytes of recorded segments."),
             ("vas_recording_segments", "gauge", "Recorded segments."),
             ("vas_recording_oldest_segment_timestamp_seconds", "gauge", "mtime of the oldest segment."),
             ("vas_recording_newest_segment_timestamp_seconds", "gauge", "mtime of the newest segment."),
             ("vas_recording_segment_duration_seconds", "gauge", "Configured length of a segment."),
             ("vas_recording_deleted_segments", "counter", "Segments retention deleted, by reason."),
             ("vas_recording_deleted_bytes", "counter", "Bytes retention deleted, by reason."),
             ("vas_recording_future_dated_segments", "gauge",
              "Segments dated over 60 s in the future: no policy deletes them before then.")]
TOTALS = ("vas_streams", "gauge", "Streams by state.")
INF = float("inf")

#: Per stream id: its recording figures (exporter/recordings.py).
Figures = dict[str, recordings.Figures]


def go(value: Any) -> str:
    """A sample's value as exposition text: ``repr`` of a finite float, an int below 2**53 with
    ``.0``, else client_python's ``floatToGoString`` (``+Inf``, ``NaN``, huge ints rounded as
    floats).  Prometheus reads each as the float client_python's text gives (tests check it)."""
    kind = type(value)
    if kind is float and -INF < value < INF:  # NaN and the infinities fail the comparison
        return repr(value)
    if kind is int and -2**53 < value < 2**53:
        return f"{value}.0"
    return floatToGoString(value)


def escape(value: str) -> str:
    """A label value as the text format writes it (prometheus_client's escaping)."""
    return utf8(value).replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def utf8(value: str) -> str:
    """``value`` with each lone surrogate as ``?``: ``json`` reads ``"\\ud800"`` into one (orjson
    refuses it), and a label value must be UTF-8 (encoding the text raised, /v2/metrics answered 500)."""
    if value.isascii():
        return value
    return value.encode("utf-8", "replace").decode("utf-8")


def header(name: str, kind: str, doc: str) -> str:
    """``# HELP`` and ``# TYPE`` of a family, as generate_latest writes them."""
    exposed = name + "_total" if kind == "counter" else name
    doc = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {exposed} {doc}\n# TYPE {exposed} {kind}\n"


def family(spec: tuple[str, str, str], lines: Sequence[str]) -> str:
    """One family's text: its header and its sample lines."""
    return header(*spec) + "".join(lines)


class _Stream:
    """One stream's label prefixes, and the text of its state and restarts with the values it was made from."""

    __slots__ = ("label", "pre", "state", "reasons")

    def __init__(self, sid: str) -> None:
        self.label = f'stream="{escape(sid)}"'
        self.pre = {name + ("_total" if kind == "counter" else ""): f"{name}{'_total' if kind == 'counter' else ''}"
                    f"{{{self.label}}} " for name, kind, _ in (*STREAM, PRODUCER, *RECORDING)}
        self.state: tuple[Any, tuple[str, str, str]] | None = None
        self.reasons: dict[str, str] = {}  # deletion reason -> its labels

    def state_text(self, current: str, counted: dict[str, Any]) -> tuple[str, str, str]:
        """``(up, state, restarts)`` lines: these change only when the stream changes state or restarts."""
        key = (current, counted)  # dicts compare in C, whatever their order
        if self.state is None or self.state[0] != key:
            up = f"{self.pre['vas_stream_up']}{go(float(current == 'live'))}\n"
            state = "".join(f'vas_stream_state{{state="{escape(name)}",{self.label}}} {go(float(name == current))}\n'
                            for name in STATES)
            restarts = "".join(f'vas_stream_restarts_total{{reason="{escape(reason)}",{self.label}}} '
                               f"{go(counted.get(reason, 0))}\n"
                               for reason in sorted(set(RESTART_REASONS) | set(counted)))
            self.state = (key, (up, state, restarts))
        return self.state[1]

    def reason(self, reason: str) -> str:
        """The labels of a deletion reason's samples (escaped once per stream and reason)."""
        labels = self.reasons.get(reason)
        if labels is None:
            labels = self.reasons[reason] = f'{{reason="{escape(reason)}",{self.label}}} '
        return labels


def _future(rec: dict[str, Any]) -> Any:
    future = rec.get("future_dated")
    return future["segments"] if isinstance(future, dict) and isinstance(future.get("segments"), int) else None


class StreamText:
    """Renders the per-stream families; keeps one ``_Stream`` per stream id of the last render."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}

    def render(self, streams: list[dict[str, Any]], figures: Figures, now: float) -> tuple[str, str, str]:
        """``(stream families, producer uptime, recording families)`` as exposition text."""
        known, self._streams = self._streams, {}
        counts = {state: 0 for state in STATES}
        kept: list[tuple[str, str, str]] = []
        rows: list[tuple[_Stream, dict[str, Any]]] = []
        for s in streams:
            sid = s["id"]
            entry = self._streams[sid] = known.get(sid) or _Stream(sid)
            current = str(s.get("state"))
            counts[current] = counts.get(current, 0) + 1
            kept.append(entry.state_text(current, s.get("restart_reasons") or {}))
            rows.append((entry, s))
        up, state, restarts = zip(*kept) if kept else ((), (), ())
        totals = [f'vas_streams{{state="{escape(name)}"}} {go(n)}\n' for name, n in counts.items()]
        stream = (up, state, _uptimes(rows, now), restarts, *_progress(rows))
        return (family(TOTALS, totals) + "".join(family(spec, lines) for spec, lines in zip(STREAM, stream)),
                family(PRODUCER, _producer_uptimes(rows, now)),
                "".join(family(spec, lines) for spec, lines in zip(RECORDING, _recording(rows, figures))))


# The values below move with nearly every snapshot: each family is written in one pass over the streams.

def _uptimes(rows: list[tuple[_Stream, dict[str, Any]]], now: float) -> list[str]:
    return [f"{e.pre['vas_stream_uptime_seconds']}{go(max(0.0, now - s['pid_started_at']))}\n"
            for e, s in rows if s.get("pid_started_at")]


def _producer_uptimes(rows: list[tuple[_Stream, dict[str, Any]]], now: float) -> list[str]:
    """A stale producer has none: whether it still exists is unknown."""
    return [f"{e.pre['vas_producer_uptime_seconds']}{go(max(0.0, now - _known(p.get('since'), now)))}\n"
            for e, p in ((e, s.get("producer")) for e, s in rows) if p and not p.get("stale")]


def _known(value: Any, default: Any) -> Any:
    """A number of the snapshot, ``default`` when it is null (the shape takes null for any
    number): written as if the key were missing."""
    return default if value is None else value


def _progress(rows: list[tuple[_Stream, dict[str, Any]]]) -> tuple[list[str], ...]:
    """``(frames, fps, bytes, last progress)`` lines of the streams with progress."""
    moving = [(e.pre, p) for e, p in ((e, s.get("progress")) for e, s in rows) if p]
    # ``or 0``: a null (the shape takes null for any number) is written as a missing one; a 0 stays 0.
    return ([f"{pre['vas_stream_frames_total']}{go(p.get('frames') or 0)}\n" for pre, p in moving],
            [f"{pre['vas_stream_fps']}{go(p.get('fps') or 0.0)}\n" for pre, p in moving],
            [f"{pre['vas_stream_output_bytes_total']}{go(p.get('bytes') or 0)}\n" for pre, p in moving],
            [f"{pre['vas_stream_last_progress_timestamp_seconds']}{go(p['last_progress_at'])}\n"
             for pre, p in moving if p.get("last_progress_at")])


def _recording(rows: list[tuple[_Stream, dict[str, Any]]], figures: Figures) -> tuple[list[str], ...]:
    """``(bytes, segments, oldest, newest, segment duration, deleted segments, deleted bytes, future
    dated)`` lines.  The segment duration of a templated stream that records: VasRecordingStopped
    judges the newest segment's age by it.  A ``command:`` stream has none: ``recording.enabled``
    and ``segment_duration`` do not apply to it (its command records as it likes, or not at all)."""
    counted = [(e.pre, f) for e, f in ((e, figures.get(s["id"])) for e, s in rows) if f is not None]
    recs = [(e, s.get("recording") or {}) for e, s in rows]
    lengths = [(e.pre, n) for (e, rec), (_, s) in zip(recs, rows)
               if rec.get("enabled") and s.get("mode") != "command"
               and (n := rec.get("segment_duration_seconds")) is not None]
    deleted = [(e.reason(reason), counts) for e, rec in recs for reason, counts in (rec.get("deleted") or {}).items()]
    ahead = [(e.pre, n) for e, n in ((e, _future(rec)) for e, rec in recs) if n is not None]
    return ([f"{pre['vas_recording_bytes']}{go(f[1])}\n" for pre, f in counted],
            [f"{pre['vas_recording_segments']}{go(f[0])}\n" for pre, f in counted],
            [f"{pre['vas_recording_oldest_segment_timestamp_seconds']}{go(f[2])}\n"
             for pre, f in counted if f[2] is not None],
            [f"{pre['vas_recording_newest_segment_timestamp_seconds']}{go(f[3])}\n"
             for pre, f in counted if f[3] is not None],
            [f"{pre['vas_recording_segment_duration_seconds']}{go(n)}\n" for pre, n in lengths],
            [f"vas_recording_deleted_segments_total{labels}{go(c.get('segments', 0))}\n" for labels, c in deleted],
            [f"vas_recording_deleted_bytes_total{labels}{go(c.get('bytes', 0))}\n" for labels, c in deleted],
            [f"{pre['vas_recording_future_dated_segments']}{go(n)}\n" for pre, n in ahead])
