"""The agent's index answers as the exporter reads them (exporter/control.py, exporter/media.py),
over a real unix socket.  The agent on the other end is a small aiohttp app here: a malformed
answer is a failure mode the real agent never produces, but the exporter must answer it with a
clear 503, not a 500 and a traceback (found by a hostile review)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiohttp import web

from agent.client import LINES, in_lines
from exporter.control import AgentControl
from exporter.media import Index, NotFound, Unavailable

HEAD = {"stream_id": "s", "segment_duration": 2.0, "truncated": False, "playlist": None}
GOOD = in_lines(HEAD, "segments", [("a_1.ts", 10.0, 2.0, 100, None), ("a_2.ts", 12.0, 2.0, 100, None)])
JSON = "application/json"
MALFORMED = {
    "empty": b"",
    "not UTF-8": b"\xff\xfe\n[[1]]\n",
    "no lines named": b'{"stream_id":"s"}\n[["a",1,2,3,null]]\n',
    "a line not an array": GOOD.split(b"\n")[0] + b'\n{"x":1}\n',
    "cut short": GOOD[:-20],
    "nested deeper than the parser goes": GOOD.split(b"\n")[0] + b"\n" + b"[" * 200_000,
}


async def ask(tmp_path, status: int, content_type: str, body: bytes) -> dict:
    async def answer(_: web.Request) -> web.Response:
        return web.Response(status=status, body=body, content_type=content_type)
    app = web.Application()
    app.router.add_get("/index/{id}/segments", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, str(tmp_path / "agent.sock")).start()
    control = AgentControl(tmp_path / "agent.sock")
    view = SimpleNamespace(fresh=lambda _: True, data={})
    ctx = SimpleNamespace(view=lambda: view, settings=SimpleNamespace(stale_after=5), control=control)
    try:
        return await Index(ctx).segments("s", 0, 100)
    finally:
        await control.close()
        await runner.cleanup()


async def test_an_answer_in_lines_is_read_whole(tmp_path):
    found = await ask(tmp_path, 200, LINES, GOOD)
    assert found == {**HEAD, "segments": [("a_1.ts", 10.0, 2.0, 100, None), ("a_2.ts", 12.0, 2.0, 100, None)]}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_answer_is_unavailable_not_an_internal_error(tmp_path, case):
    with pytest.raises(Unavailable, match="unreadable|no segments"):
        await ask(tmp_path, 200, LINES, MALFORMED[case])


async def test_the_agents_own_errors_keep_their_status_and_text(tmp_path):
    with pytest.raises(NotFound, match="unknown stream 's'"):
        await ask(tmp_path, 404, JSON, b'{"error": "unknown stream \'s\'"}')
    with pytest.raises(Unavailable, match="503: the index is loading"):
        await ask(tmp_path, 503, JSON, b'{"error": "the index is loading"}')
