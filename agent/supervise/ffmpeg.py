"""Pure FFmpeg argv builders and the ``-progress`` parser.

Templated mode pulls RTSP and copies video into HLS segments; verbatim mode
(``command:``) fills documented placeholders into the operator's own argv.
Progress always goes to the child's stdout (``-progress pipe:1``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from agent.config.model import PROGRESS_PERIOD, StreamConfig

PROGRESS_TARGET = "pipe:1"
#: How often FFmpeg reports progress.  Stall detection needs two reports per
#: ``stall_timeout``; a slower rate keeps an agent with hundreds of streams idle.
STATS_PERIOD = PROGRESS_PERIOD
#: RTSP socket I/O timeout: a silent camera makes FFmpeg exit instead of hang.
RTSP_TIMEOUT_US = 10_000_000
LIVE_PLAYLIST_SIZE = 6
#: Largest RTP packet FFmpeg sends to the SFU (its default, 1472, fills a 1500-byte MTU).  The SFU
#: adds header extensions and SRTP adds a tag on the way to a WebRTC viewer: 1472 arrived as 1508
#: bytes, over the MTU, and killed aiortc's receiver.  1200 is what WebRTC senders use.
RTP_PACKET_SIZE = 1200
#: A report is a dozen short lines: a longer unfinished line is junk.
PROGRESS_LINE_MAX = 4096
_PROGRESS_KEYS = frozenset({b"frame", b"fps", b"total_size", b"out_time_us", b"out_time_ms"})


@dataclass(frozen=True)
class Launch:
    """Where one FFmpeg run writes: fixed for the lifetime of that process."""

    recording_dir: Path
    start_stamp: str  # makes this run's segment names unique across restarts

    @property
    def segment_pattern(self) -> str:
        return str(self.recording_dir / f"{self.recording_dir.name}_{self.start_stamp}_%06d.ts")

    @property
    def playlist(self) -> str:
        return str(self.recording_dir / "index.m3u8")


def start_stamp(epoch_ms: int) -> str:
    """A UTC timestamp with milliseconds (``20261124T142613123Z``): sortable, safe in file names."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(epoch_ms // 1000)) + f"{epoch_ms % 1000:03d}Z"


@dataclass(frozen=True)
class RtpTarget:
    """Where the SFU's producer for a stream listens, what it expects, and where RTP comes from."""

    host: str
    port: int
    ssrc: int
    payload_type: int
    #: The local port every FFmpeg run of this producer sends from (agent/supervise/rtp_source.py): a comedia
    #: transport drops any other.  None: any port (none was free, or the producer is not ours yet).
    source_port: int | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        pin = f"?localrtpport={self.source_port}" if self.source_port else ""
        return f"rtp://{host}:{self.port}{pin}"


def build_argv(stream: StreamConfig, launch: Launch, *, ffmpeg: str = "ffmpeg",
               rtp: RtpTarget | None = None, rtp_seq: int | None = None) -> list[str]:
    """The argv for one run of ``stream``; ``rtp`` adds the SFU's RTP output (its first sequence
    number ``rtp_seq``, agent/supervise/rtp_source.py ``next_seq``).

    Recording and RTP are two slaves of one ``tee`` output with ``onfail=ignore``:
    a full disk drops the recording slave, not the viewers' feed, and a vanished
    SFU (UDP: nothing to fail on) never stops the recording.
    """
    if stream.command is not None:
        return verbatim_argv(stream, launch, rtp)
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning", "-nostats",
            "-progress", PROGRESS_TARGET, "-stats_period", f"{STATS_PERIOD:g}"]
    argv += input_args(stream)
    if stream.recording.enabled and rtp is not None:
        return argv + tee_output(stream, launch, rtp, rtp_seq)
    if stream.recording.enabled:
        return argv + hls_output(stream, launch)
    if rtp is not None:
        return argv + ["-map", "0:v:0", "-c:v", "copy"] + rtp_options(rtp, rtp_seq) + [rtp.url]
    # FFmpeg needs an output; without one, decode to nothing so the camera is still watched.
    return argv + ["-map", "0:v:0", "-c", "copy", "-f", "null", "-"]


#: No RTCP sender reports: FFmpeg would send them from a second socket to rtp_port+1, which
#: mediasoup never reads and which may be another producer's transport (its comedia would lock onto
#: this FFmpeg's RTCP socket); it cannot mux them (docs/mediasoup-contract.md, "RTCP").
RTP_FLAGS = "skip_rtcp"


def rtp_options(rtp: RtpTarget, seq: int | None = None) -> list[str]:
    """The RTP muxer's options: the SSRC and payload type the producer was made with, no RTCP,
    packets that fit an MTU after SRTP (WebRTC viewers), and the first sequence number if given."""
    return ["-f", "rtp", "-ssrc", str(rtp.ssrc), "-payload_type", str(rtp.payload_type), "-rtpflags", RTP_FLAGS,
            "-packetsize", str(RTP_PACKET_SIZE)] + (["-seq", str(seq)] if seq is not None else [])


def tee_output(stream: StreamConfig, launch: Launch, rtp: RtpTarget, seq: int | None = None) -> list[str]:
    """One ``tee`` output: HLS segments (video + audio) and RTP (video only), independent."""
    hls = ":".join([
        "f=hls", f"hls_time={stream.recording.segment_duration:g}", f"hls_list_size={LIVE_PLAYLIST_SIZE}",
        "hls_flags=temp_file+program_date_time+independent_segments",
        # Option values are unescaped twice (slave list, then options), the file name once.
        f"hls_segment_filename={_tee_escape(_tee_escape(launch.segment_pattern))}", "onfail=ignore"])
    send = (f"select=v:f=rtp:ssrc={rtp.ssrc}:payload_type={rtp.payload_type}:rtpflags={RTP_FLAGS}"
            f":packetsize={RTP_PACKET_SIZE}{f':seq={seq}' if seq is not None else ''}:onfail=ignore")
    return ["-map", "0:v:0", "-map", "0:a:0?", "-c:v", "copy", "-c:a", "aac", "-f", "tee",
            f"[{hls}]{_tee_escape(launch.playlist)}|[{send}]{_tee_escape(rtp.url)}"]


def _tee_escape(text: str) -> str:
    """Backslash the characters the tee muxer's slave syntax gives a meaning to."""
    for char in "\\:|[]=,'":
        text = text.replace(char, "\\" + char)
    return text


def input_args(stream: StreamConfig) -> list[str]:
    """RTSP input options: transport, socket timeout, the operator's extras, then ``-i``."""
    args = ["-rtsp_transport", stream.rtsp_transport, "-timeout", str(RTSP_TIMEOUT_US)]
    return args + list(stream.input_args) + ["-i", stream.url or ""]


def hls_output(stream: StreamConfig, launch: Launch) -> list[str]:
    """Video copied, audio (if any) to AAC, into uniquely named HLS segments."""
    return [
        "-map", "0:v:0", "-map", "0:a:0?", "-c:v", "copy", "-c:a", "aac",
        "-f", "hls",
        "-hls_time", f"{stream.recording.segment_duration:g}",
        "-hls_list_size", str(LIVE_PLAYLIST_SIZE),
        # temp_file: a segment appears under its final name only once complete.
        "-hls_flags", "temp_file+program_date_time+independent_segments",
        "-hls_segment_filename", launch.segment_pattern,
        launch.playlist,
    ]


def verbatim_argv(stream: StreamConfig, launch: Launch, rtp: RtpTarget | None = None) -> list[str]:
    """The operator's ``command:`` with its ``{placeholders}`` filled in."""
    values = {
        "url": stream.url or "",
        "stream_id": stream.id,
        "recording_dir": str(launch.recording_dir),
        "segment_pattern": launch.segment_pattern,
        "playlist": launch.playlist,
        "segment_duration": f"{stream.recording.segment_duration:g}",
        "rtsp_transport": stream.rtsp_transport,
        "progress": PROGRESS_TARGET,
        # Only a stream with its producer runs with RTP placeholders (see Stream).
        # {rtp_url} carries the pinned source port (?localrtpport=N): use it, not {rtp_host}:{rtp_port}.
        "rtp_url": rtp.url if rtp else "", "rtp_host": rtp.host if rtp else "",
        "rtp_port": str(rtp.port) if rtp else "", "ssrc": str(rtp.ssrc) if rtp else "",
        "payload_type": str(rtp.payload_type) if rtp else "",
    }
    return [arg.format_map(values) for arg in stream.command or ()]


@dataclass(frozen=True)
class Progress:
    """One ``-progress`` report (counters are cumulative for the run)."""

    frame: int = 0
    fps: float = 0.0
    total_size: int = 0
    out_time_us: int = 0
    ended: bool = False

    def advanced_from(self, before: Progress | None) -> bool:
        """True when media moved since ``before`` (any counter grew)."""
        if before is None:
            return self.frame > 0 or self.total_size > 0 or self.out_time_us > 0
        return (self.frame > before.frame or self.total_size > before.total_size
                or self.out_time_us > before.out_time_us)


class ProgressParser:
    """Turns the ``key=value`` stream of ``-progress`` into :class:`Progress` reports.

    Feed it raw bytes as they arrive; a report is complete at its
    ``progress=continue|end`` line.  Unknown keys and junk lines are ignored,
    and memory stays bounded whatever the child writes.
    """

    def __init__(self) -> None:
        self._partial = b""
        self._fields: dict[bytes, bytes] = {}

    def feed(self, data: bytes) -> list[Progress]:
        """All reports completed by ``data`` (usually zero or one)."""
        lines = (self._partial + data).split(b"\n")
        # The tail of an endless line is junk either way: keep only what a real line could be.
        self._partial = lines.pop()[-PROGRESS_LINE_MAX:]
        reports = []
        for line in lines:
            key, sep, value = line.strip().partition(b"=")
            if not sep:
                continue
            if key == b"progress":
                reports.append(self._report(value == b"end"))
                self._fields = {}
            elif key in _PROGRESS_KEYS:  # only what a report uses: junk keys cannot pile up
                self._fields[key] = value[:64]
        return reports

    def _report(self, ended: bool) -> Progress:
        f = self._fields
        return Progress(frame=_int(f.get(b"frame")), fps=_float(f.get(b"fps")),
                        total_size=_int(f.get(b"total_size")),
                        out_time_us=_int(f.get(b"out_time_us") or f.get(b"out_time_ms")),
                        ended=ended)


def _int(raw: bytes | None) -> int:
    try:
        return int(raw) if raw else 0
    except ValueError:  # FFmpeg prints "N/A" before the first packet
        return 0


def _float(raw: bytes | None) -> float:
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0  # "nan" would make the snapshot invalid JSON
