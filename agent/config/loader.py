"""Read ``streams.yaml``: parse it, check it against the schema and build the model.

``load`` is the agent's entry point; ``runtime_dir_of`` and ``runtime_dir_for_vasctl``
read just ``node.runtime_dir`` for vasctl, which runs without the agent's secrets.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from agent.config import yamlsrc
from agent.config.model import Config, ConfigError
from agent.config.validate import Validator


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


_RUNTIME_LINE = re.compile(r"^\s+runtime_dir:\s*['\"]?([^'\"#\s]+)['\"]?\s*(#.*)?$")


def runtime_dir_for_vasctl(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """``node.runtime_dir`` for vasctl, even from a broken file: right after a failed
    edit is when an operator needs ``vasctl status`` most.

    Returns the directory and, when it had to guess, a note saying how.
    """
    try:
        return runtime_dir_of(path), None
    except ValueError as exc:
        problem = str(exc).split("; pass")[0]
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for i, line in enumerate(lines):  # the first indented runtime_dir: under a top-level node:
        match = _RUNTIME_LINE.match(line)
        if match and any(prior.startswith("node:") for prior in lines[:i]) and "${" not in match.group(1):
            value = match.group(1)
            found = Path(value) if os.path.isabs(value) else (path.parent / value).resolve()
            return found, f"{problem}; using runtime_dir {found} from line {i + 1}"
    return Path("/run/vas"), f"{problem}; using the default runtime_dir /run/vas"
