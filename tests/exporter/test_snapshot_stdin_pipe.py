"""A segment FFmpeg cannot decode (review of 8c3f488, found on both loops): FFmpeg exits before
reading all of its stdin, ``communicate`` swallows the BrokenPipeError, but the pipe's close
future (asyncio.subprocess's ``_stdin_closed``) keeps it unretrieved, and every such snapshot
logged "ERROR Future exception was never retrieved ... BrokenPipeError" with a traceback
(a viewer's tile polling a corrupt segment: one traceback every few seconds)."""
from __future__ import annotations

import asyncio
import gc
import os
import shutil

import pytest
import uvloop

from exporter.snapshots import DecodeError, decode

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


@pytest.mark.parametrize("factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_an_undecodable_segment_is_a_502_reason_and_logs_nothing(factory):
    said: list[str] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: said.append(ctx["message"]))
        for _ in range(2):
            with pytest.raises(DecodeError, match="Invalid data"):
                await decode("ffmpeg", os.urandom(8 << 20))
        gc.collect()
        await asyncio.sleep(0.1)

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
        gc.collect()
    assert said == []
