"""Keep camera credentials out of everything shown: logs, snapshot, vasctl output."""
from __future__ import annotations

import logging
import re

# A URL's userinfo runs to the LAST "@" before the host: FFmpeg accepts
# rtsp://user@domain:p@ss/w#rd@host/, so the user part may hold "@" and the
# password "@", "/", "#" and spaces.  The greedy run stops at a line end or
# at the next "scheme://" (two URLs on one line), and the "@" that ends it
# must be followed by a host, not by a space as in FFmpeg's "[rtsp @ 0x55...]".
_URL_PASSWORD = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/\s]*):(?:(?![a-zA-Z][a-zA-Z0-9+.-]*://)[^\n])*@(?=[\w\[])")


def redact_url(text: str) -> str:
    """Hide URL passwords: ``rtsp://admin:pw@host`` -> ``rtsp://admin:***@host``."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", text) if "://" in text else text


def redact(text: str, secrets: frozenset[str] | set[str] = frozenset()) -> str:
    """Hide URL passwords and every known secret value in ``text``."""
    text = redact_url(text)
    # Longest first: a secret that contains another must not be half-replaced.
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    """A handler filter: no record leaves with a known secret or URL userinfo in it.

    It renders the message (and any traceback) itself and redacts the result,
    so ``log.exception`` and third-party loggers are covered too.  ``secrets``
    is replaced on reload.
    """

    def __init__(self, secrets: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: show it raw rather than lose the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = redact(message, self.secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


#: The one filter on every log handler the agent installs (``cli``); the agent
#: keeps its ``secrets`` current.
LOG_FILTER = RedactingFilter()
