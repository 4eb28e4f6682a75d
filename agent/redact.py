"""Keep camera credentials out of everything shown: logs, snapshot, vasctl output."""
from __future__ import annotations

import re

# The password part is greedy up to the last @ of the authority: "p@ss" must not leak "ss".
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):[^/\s]*@")


def redact_url(text: str) -> str:
    """Hide URL passwords: ``rtsp://admin:pw@host`` -> ``rtsp://admin:***@host``."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)


def redact(text: str, secrets: frozenset[str] | set[str] = frozenset()) -> str:
    """Hide URL passwords and every known secret value in ``text``."""
    text = redact_url(text)
    # Longest first: a secret that contains another must not be half-replaced.
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text
