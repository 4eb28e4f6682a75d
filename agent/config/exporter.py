"""The exporter's settings: the ``exporter:`` section of streams.yaml plus ``node.runtime_dir``.

The exporter runs as its own user without the agent's environment or secret
files, so, like vasctl, it reads only these keys and never resolves
``${...}``.  Errors name file, line, key and value like the agent's.
"""
from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import yamlsrc
from agent.config.units import parse_duration, parse_size

DEFAULT_LISTEN = "0.0.0.0:8080"
DEFAULT_TOKENS = Path("/etc/vas/tokens")
KEYS = frozenset({"listen", "tokens_file", "stale_after", "readiness", "tls", "require_read_token", "clip_max_size"})
#: The console's clip.mp4 answers 413 past this many bytes of segments (2 GiB).
DEFAULT_CLIP_MAX = 2 << 30
#: clip_max_size bounds: one segment at least, a large disk at most.
CLIP_MAX_RANGE = (1 << 20, 1 << 44)
READINESS_KEYS = frozenset({"min_live_ratio", "require_sfu"})
TLS_KEYS = frozenset({"cert_file", "key_file"})


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context (TLS 1.2 or later) with the pair loaded; raises ``ssl.SSLError``/``OSError``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


@dataclass(frozen=True)
class Settings:
    """What ``vas-exporter`` runs with."""

    config_path: Path
    runtime_dir: Path
    host: str = "0.0.0.0"
    port: int = 8080
    tokens_file: Path = DEFAULT_TOKENS
    stale_after: float = 5.0
    min_live_ratio: float = 0.5
    require_sfu: bool = True
    #: HTTPS: the certificate chain and its key (PEM); None serves plain HTTP.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: GET/HEAD of /v2/health/* need a ``read`` (or ``admin``) token; /livez, /readyz, /healthz never do.
    require_read_token: bool = False
    #: The console's clip.mp4: a range whose segments add up to more answers 413 before anything is sent.
    clip_max_bytes: int = DEFAULT_CLIP_MAX

    def ssl_context(self) -> ssl.SSLContext | None:
        """The HTTPS context, or None for plain HTTP."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        return server_context(self.tls_cert, self.tls_key)

    @property
    def snapshot_path(self) -> Path:
        return self.runtime_dir / "state.json"

    @property
    def socket_path(self) -> Path:
        return self.runtime_dir / "agent.sock"


class SettingsError(Exception):
    """Invalid settings; ``errors`` holds ``file:line: key: problem`` lines."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def load(path: str | os.PathLike[str]) -> Settings:
    """Read ``path``'s exporter section; raise :class:`SettingsError` listing every problem."""
    path = Path(path)
    try:
        doc = yamlsrc.parse(yamlsrc.read_source(path))
    except OSError as exc:
        raise SettingsError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except yamlsrc.SourceError as exc:
        raise SettingsError([f"{path}:{exc.line or 1}: {exc}"]) from None
    return _Checker(path, doc).settings()


class _Checker:
    def __init__(self, path: Path, doc: yamlsrc.Located) -> None:
        self.path, self.doc = path, doc
        self.errors: list[str] = []

    def error(self, keypath: tuple, message: str) -> None:
        self.errors.append(f"{self.path}:{self.doc.line(keypath) or 1}: {'.'.join(map(str, keypath))}: {message}")

    def section(self, keypath: tuple, value: Any, allowed: frozenset[str]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(keypath, f"expected a mapping, got {value!r:.60}")
            return {}
        for key in value:
            if key not in allowed:
                self.error(keypath + (key,), f"unknown key; allowed: {', '.join(sorted(allowed))}")
        return value

    def settings(self) -> Settings:
        top = self.doc.value if isinstance(self.doc.value, dict) else {}
        ex = self.section(("exporter",), top.get("exporter"), KEYS)
        ready = self.section(("exporter", "readiness"), ex.get("readiness"), READINESS_KEYS)
        host, port = self.listen(ex.get("listen", DEFAULT_LISTEN))
        fields: dict[str, Any] = dict(runtime_dir=self.runtime_dir(top), host=host, port=port,
                      tokens_file=self.file(ex.get("tokens_file", str(DEFAULT_TOKENS))),
                      stale_after=self.seconds(("exporter", "stale_after"), ex.get("stale_after", 5.0)),
                      min_live_ratio=self.ratio(ready.get("min_live_ratio", 0.5)),
                      require_sfu=self.flag(ready.get("require_sfu", True)),
                      require_read_token=self.flag(ex.get("require_read_token", False),
                                                   ("exporter", "require_read_token")),
                      clip_max_bytes=self.size(("exporter", "clip_max_size"),
                                               ex.get("clip_max_size", DEFAULT_CLIP_MAX)))
        fields["tls_cert"], fields["tls_key"] = self.tls(ex.get("tls"))
        if self.errors:
            raise SettingsError(self.errors)
        return Settings(config_path=self.path.absolute(), **fields)

    def tls(self, value: Any) -> tuple[Path | None, Path | None]:
        """``tls: {cert_file, key_file}``: both, readable, and a matching pair."""
        key = ("exporter", "tls")
        tls = self.section(key, value, TLS_KEYS)
        if not tls:
            return None, None
        paths = {}
        for name in ("cert_file", "key_file"):
            raw = tls.get(name)
            if raw is None:
                self.error(key + (name,), "required with tls: (both cert_file and key_file)")
            elif not isinstance(raw, str) or not raw or "${" in raw:
                self.error(key + (name,), f"expected a plain path, got {raw!r:.60}")
            else:
                path = Path(raw) if os.path.isabs(raw) else (self.path.parent / raw).resolve()
                if not os.access(path, os.R_OK):
                    self.error(key + (name,), f"cannot read {path}")
                else:
                    paths[name] = path
        if len(paths) < 2:
            return None, None
        try:
            server_context(paths["cert_file"], paths["key_file"])
        except (ssl.SSLError, OSError) as exc:
            self.error(key, f"{paths['cert_file'].name} and {paths['key_file'].name} are not a usable certificate "
                       f"and key pair ({getattr(exc, 'reason', None) or exc})")
            return None, None
        return paths["cert_file"], paths["key_file"]

    def runtime_dir(self, top: dict) -> Path:
        node: dict = top["node"] if isinstance(top.get("node"), dict) else {}
        value = node.get("runtime_dir", "/run/vas")
        if not isinstance(value, str) or "${" in value or not value:
            self.error(("node", "runtime_dir"), "must be a plain path for the exporter")
            return Path("/run/vas")
        return Path(value) if os.path.isabs(value) else (self.path.parent / value).resolve()

    def listen(self, value: Any) -> tuple[str, int]:
        """``host:port``, ``[v6]:port`` or ``:port``."""
        text = value if isinstance(value, str) else ""
        host, sep, port = text.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            if not sep or not 0 < int(port) < 65536:
                raise ValueError
            if host:
                ipaddress.ip_address(host)
        except ValueError:
            self.error(("exporter", "listen"), f"expected host:port like 0.0.0.0:8080 or [::]:8080, got {value!r:.60}")
            return "0.0.0.0", 8080
        return host or "0.0.0.0", int(port)

    def file(self, value: Any) -> Path:
        if not isinstance(value, str) or not value or "${" in value:
            self.error(("exporter", "tokens_file"), f"expected a plain path, got {value!r:.60}")
            return DEFAULT_TOKENS
        return Path(value) if os.path.isabs(value) else (self.path.parent / value).resolve()

    def seconds(self, keypath: tuple, value: Any) -> float:
        try:
            seconds = parse_duration(value)
            if not 1 <= seconds <= 3600:
                raise ValueError
        except (ValueError, TypeError):
            self.error(keypath, f"expected a duration from 1s to 1h, got {value!r:.60}")
            return 5.0
        return seconds

    def size(self, keypath: tuple, value: Any) -> int:
        """A size like ``2GiB`` or bytes, within CLIP_MAX_RANGE."""
        low, high = CLIP_MAX_RANGE
        try:
            size = parse_size(value)
            if not low <= size <= high:
                raise ValueError
        except (ValueError, TypeError):
            self.error(keypath, f"expected a size from 1MiB to 16TiB like 2GiB, got {value!r:.60}")
            return DEFAULT_CLIP_MAX
        return size

    def ratio(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            self.error(("exporter", "readiness", "min_live_ratio"), f"expected a number from 0 to 1, got {value!r:.60}")
            return 0.5
        return float(value)

    def flag(self, value: Any, keypath: tuple = ("exporter", "readiness", "require_sfu")) -> bool:
        if not isinstance(value, bool):
            self.error(keypath, f"expected true or false, got {value!r:.60}")
            return keypath[-1] == "require_sfu"  # each flag's default
        return value
