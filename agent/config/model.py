"""``streams.yaml`` -> frozen dataclasses, with errors naming file, line, key and value.

Every key under ``defaults`` can be overridden per stream; nested maps merge key
by key.  Unknown keys are errors so typos are never silently ignored.  Relative
paths are resolved against the config file's directory.  This module holds the
model; ``validate.py`` holds the schema and ``loader.py`` reads a file into this model.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

STREAM_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
RTSP_TRANSPORTS = ("tcp", "udp", "udp_multicast", "http", "https")
#: How often templated FFmpeg reports progress (``-stats_period``), in seconds.
PROGRESS_PERIOD = 2.0
#: A shorter stall_timeout would fire between two healthy progress reports.
MIN_STALL_TIMEOUT = 2 * PROGRESS_PERIOD
#: Placeholders a verbatim ``command:`` may use (see docs/configuration.md).
COMMAND_PLACEHOLDERS = frozenset(
    {"url", "stream_id", "recording_dir", "segment_pattern", "playlist",
     "segment_duration", "rtsp_transport", "progress"})
#: Placeholders for the SFU's RTP input: a verbatim command using one gets a producer.
RTP_PLACEHOLDERS = frozenset({"rtp_url", "rtp_host", "rtp_port", "ssrc", "payload_type"})


@dataclass(frozen=True)
class RestartPolicy:
    """How quickly a failed stream is retried (all durations in seconds)."""

    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.2
    stable_after: float = 60.0


@dataclass(frozen=True)
class RtpConfig:
    """How a stream's RTP reaches the SFU (the SFU's producer must match it)."""

    payload_type: int = 96
    ssrc: int | None = None  # None: derived from the stream id (see ``stream_ssrc``)


@dataclass(frozen=True)
class RecordingConfig:
    """HLS recording of one stream."""

    enabled: bool = True
    segment_duration: float = 10.0
    retention: float = 7 * 86400.0  # seconds; 0 keeps recordings forever
    max_size: int = 0  # bytes; 0 (``null`` in the file): no cap


@dataclass(frozen=True)
class Placement:
    """Fleet mode: the nodes a stream prefers (in order) and may run on (empty: any)."""

    prefer: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class StreamConfig:
    """One camera's effective settings (defaults already merged in)."""

    id: str
    url: str | None
    name: str = ""
    enabled: bool = True
    input_args: tuple[str, ...] = ()
    command: tuple[str, ...] | None = None
    restart: RestartPolicy = RestartPolicy()
    stall_timeout: float = 20.0
    stop_timeout: float = 10.0
    rtsp_transport: str = "tcp"
    recording: RecordingConfig = RecordingConfig()
    rtp: RtpConfig = RtpConfig()
    #: Verbatim commands without {progress}: ready once up this long (or a new segment).
    ready_after: float = 5.0
    placement: Placement = Placement()

    @property
    def reports_progress(self) -> bool:
        """True when the agent can read FFmpeg's progress (templated, or ``{progress}`` used)."""
        return self.command is None or "progress" in command_fields(self.command)

    @property
    def sends_rtp(self) -> bool:
        """True when the process feeds the SFU (templated, or an RTP placeholder used)."""
        return self.command is None or bool(command_fields(self.command) & RTP_PLACEHOLDERS)


def command_fields(command: tuple[str, ...]) -> frozenset[str]:
    """The placeholder names a verbatim command uses (it is validated: parsing succeeds)."""
    import string
    return frozenset(f for arg in command for _, f, _, _ in string.Formatter().parse(arg) if f)


@dataclass(frozen=True)
class SpaceAmount:
    """Free space as a share of the filesystem (``10%``) or a size (``20GiB``)."""

    percent: float | None = None
    bytes: int | None = None

    def of(self, total: int) -> int:
        """Bytes, for a filesystem of ``total`` bytes."""
        return int(total * self.percent / 100) if self.percent is not None else int(self.bytes or 0)


@dataclass(frozen=True)
class RecordingsConfig:
    """Host-wide retention: the free-space floor, the sweep, streams no longer configured."""

    sweep_interval: float = 3600.0
    #: How often every stream folder is checked for answering (a hung NFS or FUSE mount); a
    #: retention call stuck this long (10 s at least) with no folder known hung is named in the status.
    probe_interval: float = 30.0
    min_free: SpaceAmount = SpaceAmount(percent=10.0)
    min_free_hysteresis: SpaceAmount = SpaceAmount(percent=5.0)
    orphan_retention: float = 7 * 86400.0  # 0 keeps orphaned recordings forever


@dataclass(frozen=True)
class NodeConfig:
    """Host-wide settings of the agent."""

    runtime_dir: Path = Path("/run/vas")
    ffmpeg: str = "ffmpeg"
    #: On SIGTERM, readiness goes 503 this long before streams stop (load balancers notice).
    drain_period: float = 5.0


@dataclass(frozen=True)
class MediasoupConfig:
    """The operator's MediaSoup server: a black box the agent runs and talks HTTP to."""

    #: None: the SFU runs on its own (another unit); the agent only talks to ``api_url``.
    command: tuple[str, ...] | None = None
    api_url: str = "http://127.0.0.1:3000"
    cwd: Path | None = None
    env: tuple[tuple[str, str], ...] = ()
    ready_timeout: float = 30.0
    restart: RestartPolicy = RestartPolicy()
    stop_timeout: float = 10.0


@dataclass(frozen=True)
class ConsumersConfig:
    """Viewer sessions: closed when no heartbeat came for ``heartbeat_timeout``."""

    heartbeat_timeout: float = 60.0
    sweep_interval: float = 30.0


@dataclass(frozen=True)
class EtcdConfig:
    """How a fleet node reaches etcd (its JSON gateway)."""

    endpoints: tuple[str, ...]
    prefix: str = "/vas"
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ClusterConfig:
    """Fleet mode: this node's name, etcd, and how many streams it may own."""

    node_name: str
    etcd: EtcdConfig
    lease_ttl: float = 3.0
    max_streams: int = 64
    advertise_url: str | None = None


def stream_ssrc(stream: StreamConfig) -> int:
    """The stream's SSRC: ``rtp.ssrc``, or one derived from its id (stable across restarts)."""
    if stream.rtp.ssrc is not None:
        return stream.rtp.ssrc
    import hashlib
    # 31 bits: FFmpeg's -ssrc is a signed 32-bit option.
    return int.from_bytes(hashlib.sha256(stream.id.encode()).digest()[:4], "big") >> 1 or 1


@dataclass(frozen=True)
class Config:
    """A whole validated ``streams.yaml``."""

    path: Path
    sha256: str
    node: NodeConfig
    recordings_root: Path
    streams: Mapping[str, StreamConfig]
    #: Values substituted from ``${...}``: redacted wherever text is shown.
    secrets: frozenset[str] = field(default=frozenset(), repr=False)
    mediasoup: MediasoupConfig | None = None
    consumers: ConsumersConfig = ConsumersConfig()
    recordings: RecordingsConfig = RecordingsConfig()
    #: Fleet mode (None: this host runs every stream of the file).
    cluster: ClusterConfig | None = None


class ConfigError(Exception):
    """An invalid config; ``errors`` holds one ``file:line: key: problem`` line each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
