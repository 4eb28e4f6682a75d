"""More idle clients than the exporter has descriptors (found by the review of the uvloop
change): uvloop, at the limit, accepted and closed every waiting connection, the load
balancer's check too, and logged nothing.  The exporter now closes its oldest client
connection past ``limit_for(soft)`` and says so once; a check sent then is answered."""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from camera.fixture import free_port
from exporter.connections import ConnectionCap, limit_for
from exporter.eventloop import ENV
from tests.integration.harness import wait_for

BIN = Path(sys.executable).parent
NOFILE = 512


class Handler:
    """aiohttp's RequestHandler as the cap sees it: ``force_close()`` and whether it is answering."""

    def __init__(self, answering: bool = False) -> None:
        self.closed, self._request_in_progress = False, answering

    def force_close(self) -> None:
        self.closed = True


class Server:
    def __init__(self) -> None:
        self.open: list[Handler] = []

    def connection_made(self, handler: Handler, transport: object) -> None:
        self.open.append(handler)

    def connection_lost(self, handler: Handler, exc: BaseException | None) -> None:
        self.open.remove(handler)


def test_past_the_limit_the_oldest_is_closed_and_a_warning_said_once_a_minute(caplog):
    server, now = Server(), [0.0]
    cap = ConnectionCap(server, 3, clock=lambda: now[0])  # type: ignore[arg-type]
    handlers = [Handler() for _ in range(6)]
    for h in handlers[:3]:
        server.connection_made(h, None)
    server.connection_lost(handlers[1], None)
    for h in handlers[3:5]:
        server.connection_made(h, None)
    assert [h.closed for h in handlers] == [True, False, False, False, False, False] and len(cap) == 3
    now[0] = 59.0
    server.connection_made(handlers[5], None)
    assert [h.closed for h in handlers] == [True, False, True, False, False, False] and cap.closed == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "vas.exporter"]
    assert len(warnings) == 1 and warnings[0].startswith("3 client connections, the most kept")


def test_a_connection_being_answered_is_never_closed_for_a_newcomer():
    server = Server()
    ConnectionCap(server, 2)  # type: ignore[arg-type]
    downloading, idle, new = Handler(answering=True), Handler(), Handler()
    for h in (downloading, idle, new):
        server.connection_made(h, None)
    assert (downloading.closed, idle.closed, new.closed) == (False, True, False)
    newest = Handler()  # every other one is being answered now: the newcomer goes
    new._request_in_progress = True
    server.connection_made(newest, None)
    assert (downloading.closed, new.closed, newest.closed) == (False, False, True)


def test_aiohttp_still_says_which_connections_are_being_answered():
    """The cap tells a download from an idle client by aiohttp's own flag: were it renamed, every
    connection would look idle and downloads would be cut for newcomers."""
    from aiohttp.web_protocol import RequestHandler
    assert "_request_in_progress" in RequestHandler.__slots__


def test_the_limit_leaves_room_for_files_and_a_burst_of_accepts():
    assert limit_for(65536) == 65536 - 192 and limit_for(512) == 320 and limit_for(100) == 16


def livez(port: int, timeout: float) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/livez")
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_check_sent_while_idle_clients_hold_every_descriptor_is_answered(tmp_path, loop):
    """Before: uvloop reset the check and logged nothing; asyncio's loop answered it only once the
    idle clients timed out (15 s) and logged a traceback per failed accept (tens of thousands)."""
    port, log = free_port(), tmp_path / "exporter.log"
    conf = tmp_path / "streams.yaml"
    conf.write_text(json.dumps({"version": 1, "node": {"runtime_dir": str(tmp_path / "run")}, "streams": {},
                                "exporter": {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp_path / "tokens")}}))
    env = {**{k: v for k, v in os.environ.items() if k != ENV}, ENV: loop}
    with open(log, "wb") as out:
        proc = subprocess.Popen(["prlimit", f"--nofile={NOFILE}:{NOFILE}", "--", str(BIN / "vas-exporter"),
                                 "--config", str(conf)], stdout=out, stderr=subprocess.STDOUT, env=env)
    hogs: list[socket.socket] = []
    try:
        wait_for(lambda: livez(port, 2) == 200, 15, "the exporter")
        for _ in range(NOFILE + 60):  # more than it has descriptors for; they send nothing
            hogs.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(1)
        began = time.monotonic()
        assert livez(port, 10) == 200, "a check sent while idle clients held the descriptors"
        assert time.monotonic() - began < 5  # not after the idle clients' 15 s timeout
    finally:
        for s in hogs:
            s.close()
        proc.terminate()
        assert proc.wait(10) == 0
    lines = log.read_text().splitlines()
    assert [line for line in lines if "client connections, the most kept" in line][:1], lines[-5:]
    assert not [line for line in lines if " ERROR " in line or "Traceback" in line]
