"""The schema of ``streams.yaml``: one pass over the parsed document that checks
every key, collects every error (``file:line: key.path: problem``) and builds the
frozen dataclasses of ``model.py``.
"""
from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.config import yamlsrc
from agent.config.exporter import KEYS as EXPORTER_KEYS
from agent.config.exporter import READINESS_KEYS, TLS_KEYS
from agent.config.fleet import CLUSTER_KEYS, ETCD_KEYS, cluster_section, node_names, placement_rules
from agent.config.model import (
    COMMAND_PLACEHOLDERS,
    MIN_STALL_TIMEOUT,
    PROGRESS_PERIOD,
    RTP_PLACEHOLDERS,
    RTSP_TRANSPORTS,
    STREAM_ID,
    Config,
    ConfigError,
    ConsumersConfig,
    MediasoupConfig,
    NodeConfig,
    Placement,
    RecordingConfig,
    RestartPolicy,
    RtpConfig,
    StreamConfig,
)
from agent.config.recordings import RECORDINGS_KEYS, max_size_check, recordings_section
from agent.config.units import MAX_DURATION, DurationTooLarge, InterpolationError, interpolate, parse_duration
from agent.redact import redact, redact_url

#: Validated streams by (id, source value, defaults source): see ``Validator.stream``.
_STREAM_CACHE: dict[tuple[str, str, str], StreamConfig] = {}
_STREAM_CACHE_SIZE = 20_000


_SchemaFn = Callable[["Validator", tuple, Any], Any]


class Validator:
    """Walks the parsed document once, collecting every error before failing."""

    def __init__(self, path: Path, doc: yamlsrc.Located, env: Mapping[str, str]) -> None:
        self.path, self.doc, self.env = path, doc, env
        self.errors: list[str] = []
        self.secrets: set[str] = set()

    # -- reporting ---------------------------------------------------------
    def error(self, keypath: tuple, message: str) -> None:
        line = self.doc.line(keypath) or 1  # an empty file has no lines at all
        # Key paths too: a URL pasted as a stream id carries its password.
        key = redact(".".join(str(k) for k in keypath), self.secrets) or "(top level)"
        self.errors.append(f"{self.path}:{line}: {key}: {redact(message, self.secrets)}")

    def show(self, value: Any) -> str:
        """A value as an error message quotes it: short, repr-like, secrets hidden.

        Redacted before it is cut: a secret cut in half would no longer match.
        """
        return _clip(redact(repr(value), self.secrets))

    def mapping(self, keypath: tuple, value: Any, allowed: frozenset[str]) -> dict:
        """``value`` as a dict with only ``allowed`` keys (errors reported, {} on failure)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(keypath, f"expected a mapping, got {self.show(value)}")
            return {}
        for key in value:
            if key not in allowed:
                near = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else f"; allowed: {', '.join(sorted(allowed))}"
                self.error(keypath + (key,), f"unknown key{hint}")
        return value

    # -- scalar checks -------------------------------------------------------
    def text(self, keypath: tuple, value: Any, *, secret: bool = False, template: bool = False) -> str | None:
        if not isinstance(value, str):
            self.error(keypath, f"expected a string, got {self.show(value)}")
            return None
        try:
            text = interpolate(value, self.env, self.secrets if secret else None, template=template)
        except InterpolationError as exc:
            self.error(keypath, str(exc))
            return None
        if "\0" in text:  # no program argument or path can carry one
            self.error(keypath, f"contains a NUL byte: {self.show(value)}")
            return None
        return text

    def duration(self, keypath: tuple, value: Any, *, positive: bool = False,
                 lo: float = 0.0, hi: float | None = None) -> float | None:
        """Seconds; with ``positive`` more than 0; within ``lo``..``hi`` unless 0 is allowed."""
        try:
            seconds = parse_duration(value)
        except DurationTooLarge:
            self.error(keypath, f"must be at most {_human(hi or MAX_DURATION)}, got {self.show(value)}")
            return None
        except (ValueError, TypeError):
            self.error(keypath, f"expected a duration like 20s, got {self.show(value)}")
            return None
        if positive and seconds <= 0:
            self.error(keypath, f"must be greater than 0, got {self.show(value)}")
            return None
        if seconds and seconds < lo:
            self.error(keypath, f"must be at least {_human(lo)}, got {self.show(value)}")
            return None
        if hi is not None and seconds > hi:
            self.error(keypath, f"must be at most {_human(hi)}, got {self.show(value)}")
            return None
        return seconds

    def stall_timeout(self, keypath: tuple, value: Any) -> float | None:
        seconds = self.duration(keypath, value, hi=DAY)
        if seconds is not None and 0 < seconds < MIN_STALL_TIMEOUT:
            self.error(keypath, f"must be 0 (off) or at least {MIN_STALL_TIMEOUT:g}s (FFmpeg reports "
                       f"progress every {PROGRESS_PERIOD:g}s), got {self.show(value)}")
            return None
        return seconds

    def number(self, keypath: tuple, value: Any, lo: float, hi: float) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            self.error(keypath, f"expected a number from {lo:g} to {hi:g}, got {self.show(value)}")
            return None
        return float(value)

    def boolean(self, keypath: tuple, value: Any) -> bool | None:
        if not isinstance(value, bool):
            self.error(keypath, f"expected true or false, got {self.show(value)}")
            return None
        return value

    def strings(self, keypath: tuple, value: Any, *, template: bool = False) -> tuple[str, ...] | None:
        if not isinstance(value, list):
            self.error(keypath, f"expected a list of strings, got {self.show(value)}")
            return None
        items = [self.text(keypath + (i,), v, secret=True, template=template) for i, v in enumerate(value)]
        return None if any(i is None for i in items) else tuple(items)  # type: ignore[arg-type]

    def directory(self, keypath: tuple, value: Any) -> Path | None:
        text = self.text(keypath, value)
        if text is None:
            return None
        if not text:
            self.error(keypath, "expected a directory path, got ''")
            return None
        return (self.path.parent / text).resolve() if not os.path.isabs(text) else Path(text)

    # -- the document --------------------------------------------------------
    def config(self, raw: bytes) -> Config:
        top = self.mapping((), self.doc.value if self.doc.value is not None else {},
                           TOP_KEYS)
        version = top.get("version")
        if type(version) is not int or version != 1:  # YAML's `true` must not pass as 1
            self.error(("version",), f"expected 1, got {self.show(top.get('version'))}"
                       if "version" in top else "required key is missing (write 'version: 1')")
        node = self.node(top.get("node"))
        exporter = top.get("exporter")  # its keys are vas-exporter's: `vas-exporter --check`
        if exporter is not None and not isinstance(exporter, dict):
            self.error(("exporter",), f"expected a mapping, got {self.show(exporter)}")
        rec = self.mapping(("recordings",), top.get("recordings"), RECORDINGS_KEYS)
        root = self.directory(("recordings", "root"), rec.get("root", "/var/lib/vas/recordings"))
        recordings = recordings_section(self, rec)
        mediasoup = self.mediasoup(top.get("mediasoup"))
        consumers = self.consumers(top.get("consumers"))
        cluster = cluster_section(self, top.get("cluster"))
        self.in_fleet = "cluster" in top and top["cluster"] is not None
        defaults = self.layer(("defaults",), top.get("defaults"), _DEFAULT_KEYS)
        self.defaults_repr = repr(top.get("defaults")) + ("|fleet" if self.in_fleet else "")  # placement rules differ
        # `streams:` with every camera commented out (the installer's starter file) is no streams.
        streams = self.streams({} if "streams" in top and top["streams"] is None else top.get("streams"), defaults)
        if self.errors:
            raise ConfigError(self.errors)
        return Config(path=self.path.absolute(), sha256=hashlib.sha256(raw).hexdigest(), node=node,
                      recordings_root=root, streams=streams, secrets=frozenset(self.secrets),  # type: ignore[arg-type]
                      mediasoup=mediasoup, consumers=consumers, recordings=recordings, cluster=cluster)

    def node(self, value: Any) -> NodeConfig:
        node = self.mapping(("node",), value, NODE_KEYS)
        runtime = self.directory(("node", "runtime_dir"), node.get("runtime_dir", "/run/vas"))
        ffmpeg = self.text(("node", "ffmpeg"), node.get("ffmpeg", "ffmpeg"))
        drain = self.duration(("node", "drain_period"), node.get("drain_period", 5.0), hi=600)
        return NodeConfig(runtime_dir=runtime or Path("/run/vas"), ffmpeg=ffmpeg or "ffmpeg",
                          drain_period=5.0 if drain is None else drain)

    def mediasoup(self, value: Any) -> MediasoupConfig | None:
        """The SFU section: the operator's own server, run directly (never via npm or a shell)."""
        if value is None:
            return None
        m = self.mapping(("mediasoup",), value, MEDIASOUP_KEYS)
        key = ("mediasoup",)
        command = self.strings(key + ("command",), m["command"]) if "command" in m else ()
        if "command" in m and command is not None and (not command or Path(command[0]).name in _WRAPPERS):
            self.error(key + ("command",), "must run the server directly, e.g. [node, server.js]: through "
                       f"npm or a shell, signals and the exit status do not reach it; got {self.show(list(command))}")
        url = self.text(key + ("api_url",), m.get("api_url", "http://127.0.0.1:3000"), secret=True)
        if url is not None and not url.startswith(("http://", "https://")):
            self.error(key + ("api_url",), f"expected an http:// or https:// URL, got {self.show(url)}")
        env_items = self.string_map(key + ("env",), m.get("env"))
        restart = self.mapping(key + ("restart",), m.get("restart"), frozenset(_RESTART_CHECKS))
        policy = {k: _RESTART_CHECKS[k](self, key + ("restart", k), x) for k, x in restart.items()
                  if k in _RESTART_CHECKS}
        fields: dict[str, Any] = {
            "ready_timeout": self.duration(key + ("ready_timeout",), m.get("ready_timeout", 30.0),
                                           positive=True, hi=3600),
            "stop_timeout": self.duration(key + ("stop_timeout",), m.get("stop_timeout", 10.0),
                                          positive=True, lo=0.1, hi=600),
            "cwd": self.directory(key + ("cwd",), m["cwd"]) if "cwd" in m else None,
        }
        if command is None or url is None or env_items is None or None in policy.values() \
                or fields["ready_timeout"] is None or fields["stop_timeout"] is None:
            return None
        return MediasoupConfig(command=command or None, api_url=url, env=env_items,
                               restart=RestartPolicy(**policy), **fields)

    def string_map(self, keypath: tuple, value: Any) -> tuple[tuple[str, str], ...] | None:
        """A mapping of names to strings (an environment), values interpolated as secrets."""
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.error(keypath, f"expected a mapping of names to strings, got {self.show(value)}")
            return None
        items = [(str(k), self.text(keypath + (k,), v, secret=True)) for k, v in value.items()]
        pairs = [(k, v) for k, v in items if v is not None]
        return tuple(pairs) if len(pairs) == len(items) else None

    def consumers(self, value: Any) -> ConsumersConfig:
        c = self.mapping(("consumers",), value, CONSUMERS_KEYS)
        timeout = self.duration(("consumers", "heartbeat_timeout"), c.get("heartbeat_timeout", 60.0),
                                positive=True, lo=1, hi=86400)
        sweep = self.duration(("consumers", "sweep_interval"), c.get("sweep_interval", 30.0),
                              positive=True, lo=1, hi=3600)
        return ConsumersConfig(heartbeat_timeout=timeout or 60.0, sweep_interval=sweep or 30.0)

    def integer(self, keypath: tuple, value: Any, lo: int, hi: int) -> int | None:
        if type(value) is not int or not lo <= value <= hi:
            self.error(keypath, f"expected a whole number from {lo} to {hi}, got {self.show(value)}")
            return None
        return value

    def streams(self, value: Any, defaults: dict) -> dict[str, StreamConfig]:
        if value is None:
            self.error(("streams",), "required key is missing (a mapping of stream id to settings)")
            return {}
        if not isinstance(value, dict):
            self.error(("streams",), f"expected a mapping of stream id to settings, got {self.show(value)}")
            return {}
        out = {}
        for sid, settings in value.items():
            if not isinstance(sid, str) or not STREAM_ID.fullmatch(sid):
                # YAML reads `101:` as a number (and `007:` as 7): ask for quotes.
                hint = " (quote it: '...')" if not isinstance(sid, str) else ""
                self.error(("streams", sid), f"stream id must match {STREAM_ID.pattern}, got {self.show(sid)}{hint}")
                continue
            stream = self.stream(sid, settings, defaults)
            if stream is not None:
                out[sid] = stream
        return out

    def layer(self, prefix: tuple, value: Any, allowed: frozenset[str]) -> dict[str, Any]:
        """Validate every key present in one settings map (the defaults, or one stream's)."""
        raw = self.mapping(prefix, value, allowed)
        out = {key: check(self, prefix + (key,), raw[key])
               for key, check in _FIELD_CHECKS.items() if key in raw and key in allowed}
        for key, checks in _SECTIONS.items():
            sub = self.mapping(prefix + (key,), raw.get(key), frozenset(checks))
            out[key] = {k: check(self, prefix + (key, k), sub[k]) for k, check in checks.items() if k in sub}
        return out

    def stream(self, sid: str, value: Any, defaults: dict[str, Any]) -> StreamConfig | None:
        """One stream's settings over the validated defaults, remembered across loads.

        A reload of a big file mostly re-reads streams that did not change;
        their validated settings are reused when the source values are the same
        and hold no ``${...}`` (whose environment or secret file may have changed).
        """
        key = (sid, repr(value), self.defaults_repr)
        cacheable = "${" not in key[1] and "${" not in key[2]
        if cacheable and key in _STREAM_CACHE:
            return _STREAM_CACHE[key]
        stream = self._stream(sid, value, defaults)
        if cacheable and stream is not None:
            if len(_STREAM_CACHE) >= _STREAM_CACHE_SIZE:
                _STREAM_CACHE.clear()
            _STREAM_CACHE[key] = stream
        return stream

    def _stream(self, sid: str, value: Any, defaults: dict[str, Any]) -> StreamConfig | None:
        """One stream's settings over the (already validated) defaults, nested maps key by key."""
        base = ("streams", sid)
        own = self.layer(base, value, _STREAM_KEYS)
        fields: dict[str, Any] = {"id": sid, "name": sid, **defaults, **own}
        restart = {**defaults["restart"], **own["restart"]}
        recording = {**defaults["recording"], **own["recording"]}
        rtp = {**defaults["rtp"], **own["rtp"]}
        placement = {**defaults["placement"], **own["placement"]}
        if any(v is None for part in (fields, restart, recording, rtp, placement) for v in part.values()):
            return None  # already reported
        fields["restart"], fields["recording"] = RestartPolicy(**restart), RecordingConfig(**recording)
        fields["rtp"], fields["placement"] = RtpConfig(**rtp), Placement(**placement)
        before = len(self.errors)
        self.stream_rules(base, fields)
        placement_rules(self, base + ("placement",), fields["placement"], self.in_fleet)
        if len(self.errors) > before:
            return None
        fields.setdefault("url", None)
        return StreamConfig(**fields)

    def stream_rules(self, base: tuple, fields: dict) -> None:
        policy: RestartPolicy = fields["restart"]
        if policy.max_delay < policy.initial_delay:
            self.error(base + ("restart", "max_delay"),
                       f"must be at least initial_delay ({policy.initial_delay:g}s), got {policy.max_delay:g}s")
        if policy.multiplier == 1 and policy.initial_delay < 1:
            self.error(base + ("restart", "initial_delay"), "with multiplier 1 the delay never grows: "
                       f"must be at least 1s, got {policy.initial_delay:g}s")
        command = fields.get("command")
        if command is not None:
            self.command_rules(base + ("command",), command)
        elif "url" not in fields:
            self.error(base + ("url",), "required key is missing (the camera's rtsp:// URL)")
        elif fields["url"] is not None and not fields["url"].startswith(("rtsp://", "rtsps://")):
            shown = self.show(redact_url(fields["url"]))
            self.error(base + ("url",), f"expected an rtsp:// or rtsps:// URL, got {shown}")

    def command_rules(self, keypath: tuple, command: tuple[str, ...]) -> None:
        import string  # local: only verbatim commands need it
        used: set[str] = set()
        for i, arg in enumerate(command):
            try:
                fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(arg) if f is not None]
            except ValueError as exc:
                self.error(keypath + (i,),
                           f"bad placeholder in {self.show(arg)}: {exc} (write {{{{ for a literal brace)")
                continue
            used.update(f for f, _, _ in fields)
            if any(spec or conv for _, spec, conv in fields):
                # {url!r} or {url:>9} would be applied by str.format: only plain names are filled in.
                self.error(keypath + (i,), f"placeholders take no conversion or format spec, got {self.show(arg)}")
        unknown = sorted(used - COMMAND_PLACEHOLDERS - RTP_PLACEHOLDERS)
        if unknown:
            self.error(keypath, f"unknown placeholder {{{unknown[0]}}}; known: "
                       + ", ".join(f"{{{p}}}" for p in sorted(COMMAND_PLACEHOLDERS | RTP_PLACEHOLDERS)))
        if not command:
            self.error(keypath, "expected a non-empty list of strings")


def _transport(v: Validator, keypath: tuple, value: Any) -> str | None:
    if value not in RTSP_TRANSPORTS:
        v.error(keypath, f"expected one of {', '.join(RTSP_TRANSPORTS)}, got {v.show(value)}")
        return None
    return value


_FIELD_CHECKS: dict[str, _SchemaFn] = {
    "name": lambda v, k, x: v.text(k, x),
    "url": lambda v, k, x: v.text(k, x, secret=True),
    "enabled": Validator.boolean,
    "input_args": Validator.strings,
    "command": lambda v, k, x: v.strings(k, x, template=True),
    "stall_timeout": lambda v, k, x: v.stall_timeout(k, x),
    "stop_timeout": lambda v, k, x: v.duration(k, x, positive=True, lo=0.1, hi=600),
    "rtsp_transport": _transport,
    "ready_after": lambda v, k, x: v.duration(k, x, positive=True, lo=0.1, hi=3600),
}
DAY = 86400.0
_RESTART_CHECKS: dict[str, _SchemaFn] = {
    # 0 (or 1e-250) would stay tiny however often it is multiplied: a hot restart loop.
    "initial_delay": lambda v, k, x: v.duration(k, x, positive=True, lo=0.001, hi=3600),
    "multiplier": lambda v, k, x: v.number(k, x, 1, 100),
    # At least 1s: a camera that stays down is retried at the cap, forever.
    "max_delay": lambda v, k, x: v.duration(k, x, positive=True, lo=1, hi=DAY),
    "jitter": lambda v, k, x: v.number(k, x, 0, 1),
    "stable_after": lambda v, k, x: v.duration(k, x, hi=DAY),
}
_RECORDING_CHECKS: dict[str, _SchemaFn] = {
    "enabled": Validator.boolean,
    "segment_duration": lambda v, k, x: v.duration(k, x, positive=True, lo=0.1, hi=3600),
    "retention": Validator.duration,
    "max_size": max_size_check,
}
_RTP_CHECKS: dict[str, _SchemaFn] = {
    "payload_type": lambda v, k, x: v.integer(k, x, 96, 127),  # the dynamic range
    "ssrc": lambda v, k, x: v.integer(k, x, 1, 2**31 - 1),  # FFmpeg's -ssrc is a signed int
}
_PLACEMENT_CHECKS: dict[str, _SchemaFn] = {"prefer": node_names, "allow": node_names}
_SECTIONS: dict[str, dict[str, _SchemaFn]] = {"restart": _RESTART_CHECKS, "recording": _RECORDING_CHECKS,
                                              "rtp": _RTP_CHECKS, "placement": _PLACEMENT_CHECKS}
TOP_KEYS = frozenset({"version", "node", "recordings", "defaults", "streams", "exporter", "mediasoup", "consumers",
                      "cluster"})
NODE_KEYS = frozenset({"runtime_dir", "ffmpeg", "drain_period"})
MEDIASOUP_KEYS = frozenset({"command", "cwd", "env", "api_url", "ready_timeout", "restart", "stop_timeout"})
CONSUMERS_KEYS = frozenset({"heartbeat_timeout", "sweep_interval"})
_DEFAULT_KEYS = frozenset({"enabled", "input_args", "stall_timeout", "stop_timeout",
                           "rtsp_transport", "restart", "recording", "rtp", "ready_after", "placement"})
#: Launchers that would stand between the agent and the SFU's own process.
_WRAPPERS = frozenset({"npm", "npx", "yarn", "pnpm", "sh", "bash", "dash", "zsh", "env"})
_STREAM_KEYS = _DEFAULT_KEYS | {"name", "url", "command"}


def _human(seconds: float) -> str:
    """``1ms``, ``0.1s``, ``10m``, ``1d``: a bound as an operator would write it."""
    for unit, size in (("d", DAY), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def accepted_keys() -> dict[str, frozenset[str]]:
    """Every key the loader accepts, by section (the JSON Schema is tested against this)."""
    sections = {"": TOP_KEYS, "node": NODE_KEYS, "recordings": RECORDINGS_KEYS, "mediasoup": MEDIASOUP_KEYS,
                "mediasoup.restart": frozenset(_RESTART_CHECKS), "consumers": CONSUMERS_KEYS,
                "exporter": EXPORTER_KEYS, "exporter.readiness": READINESS_KEYS, "exporter.tls": TLS_KEYS,
                "cluster": CLUSTER_KEYS, "cluster.etcd": ETCD_KEYS,
                "defaults": _DEFAULT_KEYS, "stream": _STREAM_KEYS}
    for name, checks in _SECTIONS.items():
        sections[f"defaults.{name}"] = sections[f"stream.{name}"] = frozenset(checks)
    return sections
