"""Bearer tokens for the exporter's mutating endpoints: a file of SHA-256 hashes.

One line per token: ``name scope sha256hex``.  The token itself is printed
once by ``vasctl token add`` and stored nowhere.  Scopes: ``heartbeat``
(consumer heartbeats only), ``read`` (the /v2/health reads when
``exporter.require_read_token`` is on), ``viewer`` (the console's video: live views,
segments, snapshots, playlists, clips) and ``admin`` (everything, video included).  Stdlib only: the
exporter imports this too.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SCOPES = ("heartbeat", "read", "viewer", "admin")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HEX = re.compile(r"^[0-9a-f]{64}$")
FILE_MODE = 0o640
#: A tokens file is a few lines; anything much larger is a mistake (a log, a device).
MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class Token:
    """One stored token: its name, scope and hash (never the token)."""

    name: str
    scope: str
    digest: str


class TokenError(Exception):
    """A bad tokens file or request; the message says which line or name."""


@dataclass(frozen=True)
class Loaded:
    """What a tokens file grants now: the tokens of its good lines and one line per problem.

    ``refused``: the whole file was refused (unsafe mode or owner, unreadable, not a
    file); it then grants nothing.  Problems name the file and line, never a byte of
    the line itself (it may be a token pasted in place of its hash).
    """

    tokens: tuple[Token, ...] = ()
    problems: tuple[str, ...] = ()
    refused: bool = False


def digest(token: str) -> str:
    """The SHA-256 hex digest stored for ``token`` (total: any str, even with lone surrogates)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def load(path: Path) -> Loaded:
    """The tokens ``path`` grants; never raises.  Bad lines are dropped, each with a problem.

    Why drop and apply the rest rather than keep the previous list: lines only ever
    grant, so a dropped line can only deny, while keeping an old list would keep a
    token the same edit revoked.  A file others may write is refused like sshd does.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return Loaded()
    except OSError as exc:
        return Loaded(problems=(f"{path}: cannot read: {exc.strerror}",), refused=True)
    with os.fdopen(fd, "rb") as fh:  # checked and read through one descriptor: no swap in between
        unsafe = unsafe_reason(os.fstat(fd), path)
        if unsafe:
            return Loaded(problems=(f"{path}: {unsafe}",), refused=True)
        try:
            data = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            return Loaded(problems=(f"{path}: cannot read: {exc.strerror}",), refused=True)
    if len(data) > MAX_BYTES:
        return Loaded(problems=(f"{path}: larger than {MAX_BYTES} bytes: not a tokens file",), refused=True)
    return _parse(path, data)


def unsafe_reason(st: os.stat_result, path: Path) -> str | None:
    """Why a file with this status must not be trusted with tokens (None: it may be)."""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file: refused, no token is accepted"
    writable = [who for who, bit in (("group", 0o020), ("others", 0o002)) if st.st_mode & bit]
    if writable:
        return (f"writable by {' and '.join(writable)} (mode {stat.S_IMODE(st.st_mode):04o}), so they could add a"
                f" token: refused, no token in it is accepted; fix: chmod 640 {path}")
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}, neither root nor this process: refused, no token in it is accepted"
    return None


def _parse(path: Path, data: bytes) -> Loaded:
    tokens: list[Token] = []
    problems: list[str] = []
    names: dict[str, int] = {}
    for number, raw in enumerate(data.split(b"\n"), 1):
        token, problem = _parse_line(raw)
        if problem is None and token is not None and token.name in names:
            problem = f"the name of line {names[token.name]} again"
        if problem:
            problems.append(f"{path}:{number}: {problem}; line ignored")
        elif token is not None:
            names[token.name] = number
            tokens.append(token)
    return Loaded(tuple(tokens), tuple(problems))


def _parse_line(raw: bytes) -> tuple[Token | None, str | None]:
    """One line: (token, None), (None, problem) or (None, None) for a blank or comment line."""
    try:
        line = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        return None, f"a byte that is not ASCII text at column {exc.start + 1}"
    if not line.strip() or line.lstrip().startswith("#"):
        return None, None
    parts = line.split()
    if len(parts) != 3:
        return None, f"{len(parts)} fields, expected 3: NAME SCOPE SHA256"
    name, scope, hexdigest = parts
    if not NAME.fullmatch(name):
        return None, "bad NAME (letters, digits, '_', '.', '-', at most 64)"
    if scope not in SCOPES:
        return None, f"unknown SCOPE, expected one of {', '.join(SCOPES)}"
    if not HEX.fullmatch(hexdigest):
        return None, "the third field is not a SHA-256 hex digest (a token pasted in? use `vasctl token add`)"
    return Token(name, scope, hexdigest), None


def read(path: Path) -> list[Token]:
    """The tokens in ``path`` (none when it does not exist); TokenError lists every problem.

    For the writers (``vasctl token add|remove``): rewriting a file with bad lines
    would silently drop them, so they refuse until the operator fixes it.
    """
    loaded = load(path)
    if loaded.problems:
        raise TokenError("\n".join(loaded.problems) + f"\nfix {path} first (nothing was changed)")
    return list(loaded.tokens)


def find(tokens: Iterable[Token], presented: str) -> Token | None:
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
    """Revoke ``name``: the exporter refuses its token from its next request on."""
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
