"""``streams.yaml`` -> frozen dataclasses, with errors naming file, line, key and value.

Every key under ``defaults`` can be overridden per stream; nested maps merge key
by key.  Unknown keys are errors so typos are never silently ignored.  Relative
paths are resolved against the config file's directory.  This module holds the
model and the entry points; ``validate.py`` holds the schema.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import yamlsrc
from .backoff import RestartPolicy

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


@dataclass(frozen=True)
class RecordingConfig:
    """HLS recording of one stream."""

    enabled: bool = True
    segment_duration: float = 10.0
    retention: float = 7 * 86400.0  # seconds; 0 keeps recordings forever


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


@dataclass(frozen=True)
class NodeConfig:
    """Host-wide settings of the agent."""

    runtime_dir: Path = Path("/run/vas")
    ffmpeg: str = "ffmpeg"
    #: On SIGTERM, readiness goes 503 this long before streams stop (load balancers notice).
    drain_period: float = 5.0


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


class ConfigError(Exception):
    """An invalid config; ``errors`` holds one ``file:line: key: problem`` line each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def load(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate ``path``; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    try:
        raw = yamlsrc.read_source(path)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        doc = yamlsrc.parse(raw)
    except yamlsrc.SourceError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        raise ConfigError([f"{where}: {exc}"]) from None
    from .validate import Validator  # the schema; it imports this module's dataclasses

    return Validator(path, doc, os.environ if env is None else env).config(raw)


def runtime_dir_of(path: str | os.PathLike[str]) -> Path:
    """Just ``node.runtime_dir`` of a config file, for vasctl.

    vasctl must work without the agent's environment variables or secret files,
    so this reads that one key and validates nothing else.  Raises ``ValueError``.
    """
    path = Path(path)
    try:
        doc = yamlsrc.parse(yamlsrc.read_source(path))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}; pass --config FILE or --socket PATH") from None
    except yamlsrc.SourceError as exc:
        raise ValueError(f"{path}:{exc.line}: {exc}; pass --socket PATH to reach the agent anyway") from None
    node = doc.value.get("node") if isinstance(doc.value, dict) else None
    value = node.get("runtime_dir", "/run/vas") if isinstance(node, dict) else "/run/vas"
    if not isinstance(value, str) or "${" in value:
        raise ValueError(f"{path}: node.runtime_dir must be a plain path for vasctl; pass --socket PATH")
    return Path(value) if os.path.isabs(value) else (path.parent / value).resolve()
