"""The exporter's event loop: uvloop's (libuv) when it is installed, asyncio's own otherwise.

Every load balancer check and scrape goes through the loop.  On uvloop a /readyz costs 17 %
fewer instructions (162.7k against 195.2k, ``bench/readyz_cpu.py --instructions``): fewer
than a bare aiohttp JSON handler on asyncio's loop (173.5k).  ``VAS_EXPORTER_LOOP=asyncio`` in the
exporter's environment keeps asyncio's loop (docs/operations.md).
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping

log = logging.getLogger("vas.exporter")

#: The environment variable that names the loop: ``uvloop`` (the default) or ``asyncio``.
ENV = "VAS_EXPORTER_LOOP"
CHOICES = ("uvloop", "asyncio")


class LoopError(ValueError):
    """``VAS_EXPORTER_LOOP`` names no loop this exporter can run."""


def chosen(environ: Mapping[str, str] = os.environ) -> str:
    """The loop ``environ`` asks for: ``uvloop`` unless ``VAS_EXPORTER_LOOP`` says ``asyncio``."""
    wanted = environ.get(ENV, "").strip().lower() or "uvloop"
    if wanted not in CHOICES:
        raise LoopError(f"{ENV}={environ[ENV]!r}: want one of {', '.join(CHOICES)} (or leave it unset)")
    return wanted


def loop_factory(wanted: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop ``wanted`` (``chosen()``), for ``asyncio.Runner``; None: asyncio's own."""
    if wanted == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # a dependency, but a hand-made venv may lack it: serve anyway
        log.warning("uvloop is not installed: serving on asyncio's event loop (pip install uvloop, or set %s=asyncio)",
                    ENV)
        return None
    return uvloop.new_event_loop


__all__ = ["ENV", "LoopError", "chosen", "loop_factory"]
