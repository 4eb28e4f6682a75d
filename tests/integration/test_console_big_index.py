"""The console against a big archive (issue 20, hostile review): a real agent indexing 101,000 real
segment files of one stream, the real exporter over HTTP.  A long playlist, timeline or clip range is
megabytes of index answer; parsing it and writing the playlist on the exporter's event loop stopped
``/livez`` and ``/metrics`` for over a second.  They must keep answering while it is built."""
from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from camera.fixture import free_port

from .harness import BIN, wait_for
from .test_console_api import archive_node, archive_stream

#: Slow (planting 101k files takes half a minute) and heavy: handed out mid-run, not into the run's
#: CPU- and disk-saturated opening beside the install tests, where the planting passed the 120 s hang
#: bound (fresh-clone runs X-3, Y-1).  Not an xdist_group: groups are handed out first.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.heavy]
#: A bare aiohttp server: its answer time is what the host's load alone costs a request.
PEER = """
import sys
from aiohttp import web
app = web.Application()
app.router.add_get("/livez", lambda request: web.json_response({"status": "ok"}))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""
SEGMENTS = 101_000
SEG = 2.0


def get(port: int, path: str, token: str | None = None) -> tuple[int, bytes, float]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    began = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    return status, body, time.monotonic() - began


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """``big``: SEGMENTS one-byte 2 s segments in dated folders, ending 10 minutes ago."""
    tmp = tmp_path_factory.mktemp("bigindex")
    agent, port = archive_node(tmp, {"big": archive_stream("2s")})
    first = time.time() - 600 - SEG * SEGMENTS
    for i in range(SEGMENTS):
        folder = agent.recordings / "big" / f"2026-06-{i // 43_200 + 1:02d}"
        if i % 43_200 == 0:
            folder.mkdir(parents=True)
        path = folder / f"big_20260601T000000000Z_{i:07d}.ts"
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o640)
        os.write(fd, b"G")
        os.close(fd)
        os.utime(path, (first + SEG * (i + 1),) * 2)
    agent.start()
    exporter = None
    try:
        token = agent.vasctl("token", "add", "t-viewer", "--scope", "viewer").stdout.split()[-1]
        with open(agent.workdir / "exporter.log", "ab") as log:
            exporter = subprocess.Popen([str(BIN / "vas-exporter"), "--config", str(agent.config_path)],
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: get(port, "/livez")[0] == 200, 15, "the exporter")
        wait_for(lambda: b'"ranges": [[' in get(port, f"/v2/recordings/big/timeline?start={int(first)}"
                                                 f"&end={int(first) + 3600}", token)[1], 60, "the big stream's index")
        peer_port = free_port()
        peer = subprocess.Popen([sys.executable, "-c", PEER, str(peer_port)], start_new_session=True)
        try:
            wait_for(lambda: get_or_none(peer_port, "/livez") == 200, 15, "the bare aiohttp peer")
            yield port, token, first, peer_port, agent.workdir / "exporter.log", agent.config_path
        finally:
            peer.kill()
            peer.wait(10)
    finally:
        try:
            if exporter is not None:
                exporter.terminate()
                exporter.wait(10)
        except subprocess.TimeoutExpired:
            exporter.kill()
            exporter.wait(10)
        finally:
            agent.stop()


def get_or_none(port: int, path: str) -> int | None:
    try:
        return get(port, path)[0]
    except OSError:
        return None


def longest_livez_while(port: int, path: str, token: str, peer_port: int) -> tuple[int, bytes, float, float]:
    """``(status, body, the longest /livez took, the longest the peer's took)`` while ``path`` is
    asked; the two are asked in turn, so the peer's shows what the host's load cost at that moment."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        asked = pool.submit(get, port, path, token)
        worst = peer_worst = 0.0
        while not asked.done():
            worst = max(worst, get(port, "/livez")[2])
            peer_worst = max(peer_worst, get(peer_port, "/livez")[2])
            time.sleep(0.02)
        status, body, _ = asked.result()
    return status, body, worst, peer_worst


@pytest.mark.parametrize("days", [2.3, 31])
def test_the_exporter_keeps_answering_while_a_long_playlist_is_built(node, days):
    """The playlist built on the event loop held /livez for over a second, unloaded.  Built in a
    thread instead, it still took the GIL from the loop: on a loaded 2-core host each time the loop
    needed it back cost it the switch interval and a wait for the CPU, and /livez took 0.1-0.6 s
    beyond a bare aiohttp server beside it.  Read and written a piece per turn of the loop
    (exporter/turns.py), it took at most 0.06 s beyond it with three busy loops beside, but 0.46 s
    in a loaded CI run (the exporter, busy, waits for the CPU; the idle peer does not).  Here, a
    bound that only a loop held for the whole answer passes: 2 s beyond the peer.  The pieces
    themselves are judged in CPU by the next test."""
    port, token, first, peer_port, _, _ = node
    path = f"/v2/recordings/big/playlist.m3u8?start={int(first)}&end={int(first + days * 86400)}"
    status, body, worst, peer_worst = longest_livez_while(port, path, token, peer_port)
    if days < 3:  # 99,360 segments: under the index's answer limit, a 13 MB playlist
        assert status == 200 and body.count(b"#EXTINF:") > 99_000
    else:  # past it: refused, naming the parameter
        assert status == 400 and b"ask a shorter one" in body
    assert worst < 2.0 + peer_worst, (f"/livez took {worst:.2f}s while a {days}-day playlist was asked "
                                      f"(a bare aiohttp server beside it: {peer_worst:.2f}s)")


@pytest.mark.parametrize("days", [2.3, 31])
async def test_no_turn_of_the_loop_takes_long_while_a_long_playlist_is_built(node, days):
    """The same, counted in CPU rather than in time (a loaded host stretches every turn: a CI
    run saw a /livez 0.46 s late beside a peer's 0.05 s): the exporter's app in this process,
    against the real agent's index.  No turn of its loop spends 60 ms of CPU: the longest are
    10-35 ms (a step of the answer's lines, the answer's objects freed); the answer read at once
    took 93-116 ms, the playlist written at once 298 ms.  And the loop's own thread does the
    work (a build in a thread beside it took the GIL)."""
    from aiohttp.test_utils import TestClient, TestServer

    from agent.config.exporter import load
    from exporter.app import create_app

    from .loopturns import cpu_per_turn
    _, token, first, _, _, config_path = node
    path = f"/v2/recordings/big/playlist.m3u8?start={int(first)}&end={int(first + days * 86400)}"
    async with TestClient(TestServer(create_app(load(config_path)))) as client:
        for _ in range(100):  # the app's first read of the agent's snapshot
            if (await client.get("/readyz")).status == 200:
                break
            await asyncio.sleep(0.1)
        gc.collect()
        gc.freeze()  # as vas-exporter does after its start (exporter/cli.py): a full collection
        try:         # here would walk the whole test process (50 ms a time), not an exporter's heap
            process = time.process_time()
            with cpu_per_turn() as turns:
                answer = await client.get(path, headers={"Authorization": f"Bearer {token}"})
                body = await answer.read()
            process = time.process_time() - process
        finally:
            gc.unfreeze()
    if days < 3:
        assert answer.status == 200 and body.count(b"#EXTINF:") > 99_000
    else:
        assert answer.status == 400 and b"ask a shorter one" in body
    print(f"\n{days} days: {turns.turns} turns, longest {turns.longest * 1000:.1f} ms of CPU, "
          f"loop {turns.spent:.3f} s of {process:.3f} s")
    assert turns.longest < 0.06, f"a turn took {turns.longest * 1000:.0f} ms of CPU ({turns.turns} turns)"
    assert turns.turns > 20
    assert process - turns.spent < 0.1, f"{process - turns.spent:.2f} s of CPU outside the loop's thread"


def test_a_client_that_leaves_mid_playlist_is_counted_not_logged_as_an_error(node):
    """The playlist is sent in pieces; a player that goes away in the middle (the console's dialog
    closed while hls.js loads it) made the exporter log ``... failed`` with a traceback and count
    a 500 (found by a hostile review).  It is the client's doing: counted as 499, never logged."""
    port, token, first, _, log, _ = node
    path = f"/v2/recordings/big/playlist.m3u8?start={int(first)}&end={int(first + 2.3 * 86400)}"
    before = log.read_text(errors="replace")
    for linger in (False, True):  # a plain close, then a reset
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        if linger:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    counted = 'vas_api_requests_total{code="499",handler="/v2/recordings/{stream_id}/playlist.m3u8",method="GET"} 2.0'
    wait_for(lambda: counted in get(port, "/v2/metrics")[1].decode(), 30, "both departures counted as 499")
    added = log.read_text(errors="replace")[len(before):]
    assert "failed" not in added and "Traceback" not in added, added[-3000:]
    assert get(port, "/livez")[0] == 200
