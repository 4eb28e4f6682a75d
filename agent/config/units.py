"""Durations, sizes and ``${...}`` interpolation for config values (pure functions)."""
from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Mapping

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: No duration in the file may exceed this (100 years): beyond it, time arithmetic overflows.
MAX_DURATION = 100 * 365 * 86400.0
#: A ``${file:}`` secret larger than this is refused (``/dev/zero`` must not fill memory).
SECRET_FILE_MAX = 64 * 1024


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a string like ``500ms``, ``20s``, ``5m``, ``1h``, ``7d``."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError  # .inf and .nan are not durations
        seconds = float(value) if not isinstance(value, int) or value <= MAX_DURATION else math.inf
    else:
        match = _DURATION.match(value) if isinstance(value, str) else None
        if not match:
            raise ValueError
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds > MAX_DURATION:  # also a 400-digit number (inf)
        raise DurationTooLarge
    if not 0 <= seconds:  # also refuses nan
        raise ValueError
    return seconds


class DurationTooLarge(ValueError):
    """A well-formed duration above :data:`MAX_DURATION`."""


def parse_size(value: object) -> int:
    """Bytes from a number of bytes or a string like ``500MiB`` or ``50GiB``."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        if not 0 <= value < 1 << 62:
            raise ValueError
        return value
    match = _SIZE.match(value) if isinstance(value, str) and len(value) < 64 else None
    if not match:
        raise ValueError
    size = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if not size < 1 << 62:  # also refuses inf
        raise ValueError
    return int(size)


class InterpolationError(ValueError):
    """A ``${...}`` reference that cannot be resolved; the message says which and why."""


def interpolate(text: str, env: Mapping[str, str], secrets: set[str] | None = None,
                *, template: bool = False) -> str:
    """Replace ``${NAME}`` from ``env`` and ``${file:/path}`` with the file's contents.

    ``$${`` stands for a literal ``${``.  Every substituted value is added to
    ``secrets`` so logs and status can redact it.  With ``template`` the result
    is a ``str.format`` template, so braces in substituted values are escaped
    (a password may contain ``{``).
    """
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        ref = match.group(1)
        if ref is None:
            raise InterpolationError("unclosed ${ (write $${ for a literal ${)")
        if ref.startswith("file:"):
            value = _read_secret_file(ref[5:])
        elif _ENV_NAME.fullmatch(ref):
            if ref not in env:
                raise InterpolationError(f"environment variable {ref} is not set")
            value = env[ref]
        else:
            raise InterpolationError(f"bad reference ${{{ref}}}: expected ${{NAME}} or ${{file:/path}}")
        if secrets is not None and len(value) >= 3:
            secrets.add(value)
        return value.replace("{", "{{").replace("}", "}}") if template else value

    return _REFERENCE.sub(replace, text) if "$" in text else text


def _read_secret_file(path: str) -> str:
    """A secret file's text: a regular file of at most SECRET_FILE_MAX bytes, UTF-8, no NUL."""
    if not os.path.isabs(path):
        raise InterpolationError(f"secret file path must be absolute, got {path!r}")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except (OSError, ValueError) as exc:
        raise InterpolationError(f"cannot read secret file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InterpolationError(f"secret file {path} is not a regular file")
        data = b""
        while len(data) <= SECRET_FILE_MAX and (chunk := os.read(fd, SECRET_FILE_MAX + 1 - len(data))):
            data += chunk
    except OSError as exc:
        raise InterpolationError(f"cannot read secret file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > SECRET_FILE_MAX:
        raise InterpolationError(f"secret file {path} is larger than {SECRET_FILE_MAX // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InterpolationError(f"secret file {path} is not UTF-8 text") from None
    if "\0" in text:
        raise InterpolationError(f"secret file {path} contains a NUL byte")
    # A trailing newline is an editor artefact, never part of a password.
    return text.rstrip("\r\n")
