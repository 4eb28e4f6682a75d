"""Bearer tokens for the exporter's mutating endpoints: a file of SHA-256 hashes.

One line per token: ``name scope sha256hex``.  The token itself is printed
once by ``vasctl token add`` and stored nowhere.  Scopes: ``heartbeat``
(consumer heartbeats only) and ``admin`` (everything).  Stdlib only: the
exporter imports this too.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

SCOPES = ("heartbeat", "admin")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FILE_MODE = 0o640


@dataclass(frozen=True)
class Token:
    """One stored token: its name, scope and hash (never the token)."""

    name: str
    scope: str
    digest: str


class TokenError(Exception):
    """A bad tokens file or request; the message says which line or name."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def read(path: Path) -> list[Token]:
    """The tokens in ``path`` (none when it does not exist); TokenError names a bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise TokenError(f"cannot read {path}: {exc.strerror}") from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3 or parts[1] not in SCOPES or not re.fullmatch(r"[0-9a-f]{64}", parts[2]):
            raise TokenError(f"{path}:{number}: expected 'NAME SCOPE SHA256', scope one of {', '.join(SCOPES)}")
        out.append(Token(*parts))
    return out


def find(tokens: list[Token], presented: str) -> Token | None:
    """The token whose hash matches ``presented``, compared in constant time."""
    want, match = digest(presented), None
    for token in tokens:  # no early exit: timing says nothing about which one matched
        if hmac.compare_digest(token.digest, want):
            match = token
    return match


def add(path: Path, name: str, scope: str) -> str:
    """Create a token, store its hash, return the token (shown once)."""
    if not NAME.fullmatch(name):
        raise TokenError(f"bad token name {name!r}: letters, digits, '_', '.', '-' (max 64)")
    if scope not in SCOPES:
        raise TokenError(f"bad scope {scope!r}: one of {', '.join(SCOPES)}")
    tokens = read(path)
    if any(t.name == name for t in tokens):
        raise TokenError(f"a token named {name!r} exists; remove it first")
    token = secrets.token_urlsafe(32)
    _write(path, [*tokens, Token(name, scope, digest(token))])
    return token


def remove(path: Path, name: str) -> None:
    tokens = read(path)
    if not any(t.name == name for t in tokens):
        raise TokenError(f"no token named {name!r} in {path}")
    _write(path, [t for t in tokens if t.name != name])


def _write(path: Path, tokens: list[Token]) -> None:
    """Atomically, mode 0640 from the start (no window where others can read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("# vas-exporter bearer tokens: NAME SCOPE SHA256 (managed by `vasctl token`)\n")
            fh.writelines(f"{t.name} {t.scope} {t.digest}\n" for t in tokens)
        try:  # keep the group of an existing file (root:vas), so the exporter can read it
            st = os.stat(path)
            os.chown(tmp, st.st_uid, st.st_gid)
        except (FileNotFoundError, PermissionError):
            pass
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
