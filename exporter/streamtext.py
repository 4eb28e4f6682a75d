"""The per-stream families of /v2/metrics as exposition text, re-rendered only where values changed.

At 500 streams these families are ~12,000 samples; prometheus_client builds a
Sample and escapes every label of every one on each render (tens of ms), and the
snapshot changes every few seconds.  Here each stream keeps its escaped label
prefixes and its text per group of values (state and restarts; progress;
recording figures), keyed by the values that group is made of: a new snapshot
re-renders only the groups whose values changed, plus the two uptimes, which
move with the clock.  The output is byte for byte what prometheus_client's
``generate_latest`` gives for the same families (tests/exporter/test_metrics_text.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client.utils import floatToGoString

from agent.snapshot_view import UNKNOWN
from agent.supervise.states import StreamState

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
             ("vas_recording_deleted_segments", "counter", "Segments retention deleted, by reason."),
             ("vas_recording_deleted_bytes", "counter", "Bytes retention deleted, by reason."),
             ("vas_recording_future_dated_segments", "gauge",
              "Segments dated over 60 s in the future: no policy deletes them before then.")]
TOTALS = ("vas_streams", "gauge", "Streams by state.")
INF = float("inf")

Figures = dict[str, tuple[int, int, "float | None"]]


def go(value: Any) -> str:
    """``floatToGoString(value)`` (a sample's value as client_python writes it), with fast paths
    for ints below 2**53 and floats below 1e16 (tests check that they agree)."""
    kind = type(value)
    if kind is int and 0 <= value < 2**53:
        if value < 1_000_000:
            return f"{value}.0"
        digits = str(value)  # Go writes 1e+06 and up with an exponent: 1234567 -> 1.234567e+06
        return f"{(digits[0] + '.' + digits[1:]).rstrip('0.')}e+{len(digits) - 1:02d}"
    if kind is float:
        if -INF < value < 1e6:  # NaN and -Inf fail the comparison
            return repr(value)
        if 1e6 <= value < 1e16:  # repr is positional here: 1764300000.25 -> 1.76430000025e+09
            text = repr(value)
            dot = text.find(".")
            return f"{(text[0] + '.' + text[1:dot] + text[dot + 1:]).rstrip('0.')}e+{dot - 1:02d}"
    return floatToGoString(value)


def escape(value: str) -> str:
    """A label value as the text format writes it (prometheus_client's escaping)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def header(name: str, kind: str, doc: str) -> str:
    """``# HELP`` and ``# TYPE`` of a family, as generate_latest writes them."""
    exposed = name + "_total" if kind == "counter" else name
    doc = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {exposed} {doc}\n# TYPE {exposed} {kind}\n"


def family(spec: tuple[str, str, str], lines: Sequence[str]) -> str:
    """One family's text: its header and its sample lines."""
    return header(*spec) + "".join(lines)


class _Stream:
    """One stream's label prefixes and the text of each group, with the values it was made from."""

    __slots__ = ("sid", "label", "pre", "state", "progress", "recording")

    def __init__(self, sid: str) -> None:
        self.sid, self.label = sid, f'stream="{escape(sid)}"'
        self.pre = {name + ("_total" if kind == "counter" else ""): f"{name}{'_total' if kind == 'counter' else ''}"
                    f"{{{self.label}}} " for name, kind, _ in (*STREAM, PRODUCER, *RECORDING)}
        self.state: tuple[Any, tuple[str, ...]] | None = None
        self.progress: tuple[Any, tuple[str, ...]] | None = None
        self.recording: tuple[Any, tuple[str, ...]] | None = None

    def state_text(self, current: str, counted: dict[str, Any]) -> tuple[str, ...]:
        """``(up, state, restarts)`` lines: these change only when the stream changes state or restarts."""
        key = (current, tuple(counted.items()))
        if self.state is None or self.state[0] != key:
            up = f"{self.pre['vas_stream_up']}{go(float(current == 'live'))}\n"
            state = "".join(f'vas_stream_state{{state="{escape(name)}",{self.label}}} {go(float(name == current))}\n'
                            for name in STATES)
            restarts = "".join(f'vas_stream_restarts_total{{reason="{escape(reason)}",{self.label}}} '
                               f"{go(counted.get(reason, 0))}\n"
                               for reason in sorted(set(RESTART_REASONS) | set(counted)))
            self.state = (key, (up, state, restarts))
        return self.state[1]

    def progress_text(self, progress: dict[str, Any]) -> tuple[str, ...]:
        """``(frames, fps, bytes, last progress)`` lines ("" each without progress)."""
        key = tuple(progress.items())
        if self.progress is None or self.progress[0] != key:
            p, last = self.pre, progress.get("last_progress_at")
            self.progress = (key, (f"{p['vas_stream_frames_total']}{go(progress.get('frames', 0))}\n",
                                   f"{p['vas_stream_fps']}{go(progress.get('fps', 0.0))}\n",
                                   f"{p['vas_stream_output_bytes_total']}{go(progress.get('bytes', 0))}\n",
                                   f"{p['vas_stream_last_progress_timestamp_seconds']}{go(last)}\n" if last else "")
                             if progress else ("", "", "", ""))
        return self.progress[1]

    def recording_text(self, figures: tuple[int, int, float | None] | None, rec: dict[str, Any]) -> tuple[str, ...]:
        """``(bytes, segments, oldest, deleted segments, deleted bytes, future dated)`` lines."""
        deleted, future = rec.get("deleted") or {}, rec.get("future_dated")
        ahead = future["segments"] if isinstance(future, dict) and isinstance(future.get("segments"), int) else None
        removed = tuple((reason, counts.get("segments", 0), counts.get("bytes", 0))
                        for reason, counts in deleted.items())
        key = (figures, removed, ahead)
        if self.recording is None or self.recording[0] != key:
            p, lines = self.pre, ["", "", ""]
            if figures is not None:
                n, total, first = figures
                lines = [f"{p['vas_recording_bytes']}{go(total)}\n", f"{p['vas_recording_segments']}{go(n)}\n",
                         f"{p['vas_recording_oldest_segment_timestamp_seconds']}{go(first)}\n"
                         if first is not None else ""]
            by_reason = [(f'{{reason="{escape(reason)}",{self.label}}} ', n, size) for reason, n, size in removed]
            lines.append("".join(f"vas_recording_deleted_segments_total{labels}{go(n)}\n"
                                 for labels, n, _ in by_reason))
            lines.append("".join(f"vas_recording_deleted_bytes_total{labels}{go(size)}\n"
                                 for labels, _, size in by_reason))
            lines.append(f"{p['vas_recording_future_dated_segments']}{go(ahead)}\n" if ahead is not None else "")
            self.recording = (key, tuple(lines))
        return self.recording[1]


class StreamText:
    """Renders the per-stream families; keeps one ``_Stream`` per stream id of the last render."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}

    def render(self, streams: list[dict[str, Any]], figures: Figures, now: float) -> tuple[str, str, str]:
        """``(stream families, producer uptime, recording families)`` as exposition text."""
        known, self._streams = self._streams, {}
        rows: list[tuple[str, ...]] = []
        counts = {state: 0 for state in STATES}
        for s in streams:
            sid = s["id"]
            entry = self._streams[sid] = known.get(sid) or _Stream(sid)
            current = str(s.get("state"))
            counts[current] = counts.get(current, 0) + 1
            started, p = s.get("pid_started_at"), s.get("producer")
            uptime = f"{entry.pre['vas_stream_uptime_seconds']}{go(max(0.0, now - started))}\n" if started else ""
            producer = (f"{entry.pre['vas_producer_uptime_seconds']}{go(max(0.0, now - p.get('since', now)))}\n"
                        if p and not p.get("stale") else "")  # a stale one: whether it still exists is unknown
            up, state, restarts = entry.state_text(current, s.get("restart_reasons") or {})
            rows.append((up, state, uptime, restarts, *entry.progress_text(s.get("progress") or {}), producer,
                         *entry.recording_text(figures.get(sid), s.get("recording") or {})))
        totals = [f'vas_streams{{state="{escape(name)}"}} {go(n)}\n' for name, n in counts.items()]
        column = list(zip(*rows)) if rows else [()] * 15  # the families are written column by column
        return (family(TOTALS, totals) + "".join(family(spec, lines) for spec, lines in zip(STREAM, column)),
                family(PRODUCER, column[8]),
                "".join(family(spec, lines) for spec, lines in zip(RECORDING, column[9:])))
