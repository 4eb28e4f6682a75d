"""aiohttp's server logging, kept readable: a malformed request is one debug line, not a traceback."""
from __future__ import annotations

import logging


class QuietProtocolErrors(logging.Filter):
    """aiohttp logs a client's malformed HTTP as an error with a traceback: a port scanner
    or a broken client would fill the log.  One short debug line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.exc_info, record.exc_text = None, None
            record.msg, record.args, record.levelno, record.levelname = (
                "bad request from a client: %s", (str(exc)[:200],), logging.DEBUG, "DEBUG")
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def quiet_protocol_errors() -> None:
    """Install :class:`QuietProtocolErrors` once on aiohttp's server logger."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietProtocolErrors) for f in server.filters):
        server.addFilter(QuietProtocolErrors())
