"""Bearer-token checks for mutating endpoints (read-only ones need none).

Missing or unknown token: 401 with ``WWW-Authenticate: Bearer``; a token
whose scope does not allow the call: 403.  The token list is read at start
and on SIGHUP (``reload()``).
"""
from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from agent import tokens as tokens_mod

log = logging.getLogger("vas.exporter")


class Auth:
    """Holds the token hashes; ``check(request, scope)`` raises the HTTP error or returns the name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tokens: list[tokens_mod.Token] = []
        self.reload()

    def reload(self) -> None:
        """Re-read the tokens file; a broken file keeps the previous list (and says so)."""
        try:
            self.tokens = tokens_mod.read(self.path)
        except tokens_mod.TokenError as exc:
            log.error("tokens: %s; keeping the %d tokens loaded before", exc, len(self.tokens))
            return
        log.info("tokens: %d loaded from %s", len(self.tokens), self.path)

    def check(self, request: web.Request, scope: str) -> str:
        header = request.headers.get("Authorization", "")
        kind, _, presented = header.partition(" ")
        token = tokens_mod.find(self.tokens, presented.strip()) if kind.lower() == "bearer" and presented else None
        if token is None:
            raise _json_error(web.HTTPUnauthorized, "a valid bearer token is required",
                              {"WWW-Authenticate": 'Bearer realm="vas"'})
        if token.scope != "admin" and token.scope != scope:
            raise _json_error(web.HTTPForbidden, f"token '{token.name}' (scope {token.scope}) may not do this")
        return token.name


def _json_error(cls: type[web.HTTPException], message: str, headers: dict[str, str] | None = None) -> web.HTTPException:
    import json
    return cls(text=json.dumps({"error": message}), content_type="application/json", headers=headers)
