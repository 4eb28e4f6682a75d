"""Bearer-token checks: changes, the console's video (scope ``viewer``), and the reads when
``exporter.require_read_token`` is on.  An ``admin`` token may do everything.

Missing, malformed or unknown token: 401 with ``WWW-Authenticate: Bearer``; a
token whose scope does not allow the call: 403; a tokens file the exporter
refused (others may write it, unreadable): 503, since no token can work until
an operator fixes it.  The file is re-read when it changes: every check stats
it (a few microseconds) and reloads on a new inode, size, mtime, ctime or
mode, so ``vasctl token add|remove`` applies at the next request without a
SIGHUP.  Nothing about the file can stop the exporter from starting.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from aiohttp import web

from agent import tokens as tokens_mod

log = logging.getLogger("vas.exporter")

#: RFC 6750's b64token: anything else in the header is malformed, never hashed.
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
REFUSED = "the exporter refused its tokens file (see its log): no token is accepted until an operator fixes it"


class Auth:
    """Holds the token hashes; ``check(request, scope)`` raises the HTTP error or returns the name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loaded = tokens_mod.Loaded()
        self._seen: tuple[int, ...] | None = None
        self.reload()

    @property
    def tokens(self) -> tuple[tokens_mod.Token, ...]:
        """The tokens accepted now."""
        return self.loaded.tokens

    def reload(self) -> None:
        """Re-read the tokens file now (start, SIGHUP, a changed file); log what it grants."""
        self._seen = _identity(self.path)
        self.loaded = tokens_mod.load(self.path)
        for problem in self.loaded.problems:
            log.error("tokens: %s", problem)
        if self.loaded.refused:
            log.error("tokens: mutating routes answer 503 until %s is fixed (read routes are not affected)",
                      self.path)
        elif self._seen is None:
            log.warning("tokens: %s does not exist: no token is accepted (create one: vasctl token add)", self.path)
        else:
            log.info("tokens: %d loaded from %s%s", len(self.loaded.tokens), self.path,
                     f" ({len(self.loaded.problems)} bad line(s) ignored)" if self.loaded.problems else "")

    def refresh(self) -> None:
        """Reload if the file changed since it was read (one stat)."""
        if _identity(self.path) != self._seen:
            self.reload()

    def check(self, request: web.Request, scope: str | tuple[str, ...]) -> str:
        """The name of the request's token if its scope is ``scope`` (or one of them) or admin;
        else the HTTP error to answer."""
        self.refresh()
        if self.loaded.refused:
            raise _json_error(web.HTTPServiceUnavailable, REFUSED)
        presented = bearer(request.headers.get("Authorization", ""))
        if presented is None:
            raise _json_error(web.HTTPUnauthorized, "malformed Authorization header: expected 'Bearer <token>'",
                              {"WWW-Authenticate": 'Bearer realm="vas", error="invalid_request"'})
        token = tokens_mod.find(self.loaded.tokens, presented) if presented else None
        if token is None:
            raise _json_error(web.HTTPUnauthorized, "a valid bearer token is required",
                              {"WWW-Authenticate": 'Bearer realm="vas"'})
        if token.scope != "admin" and token.scope not in ((scope,) if isinstance(scope, str) else scope):
            raise _json_error(web.HTTPForbidden, f"token '{token.name}' (scope {token.scope}) may not do this")
        return token.name


def bearer(header: str) -> str | None:
    """The token of ``Bearer <token>``; "" when there is no header; None when it is malformed."""
    if not header:
        return ""
    kind, _, value = header.strip().partition(" ")
    value = value.strip()
    if kind.lower() != "bearer" or not B64TOKEN.fullmatch(value):
        return None
    return value


def _identity(path: Path) -> tuple[int, ...] | None:
    """What changes when the file is replaced, edited or chmod-ed; None when it cannot be stat-ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid


def _json_error(cls: type[web.HTTPException], message: str, headers: dict[str, str] | None = None) -> web.HTTPException:
    return cls(text=json.dumps({"error": message}), content_type="application/json", headers=headers)
