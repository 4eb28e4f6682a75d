"""Hostile HTTP on a live vas-exporter over a real TCP socket: malformed requests, smuggling
shapes and every method on a read route get a 4xx or an answer, never a 500, never a
traceback in the log, and the exporter keeps serving."""
from __future__ import annotations

import socket

import pytest

from camera.fixture import free_port
from tests.integration.harness import CHEAP, AgentProcess, config
from tests.integration.test_exporter import Exporter, http

#: One worker runs this module's tests, so its module-scoped node is built once, not once per worker.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("hostile_http")]

#: One request each, as raw bytes: header and path bytes HTTP forbids, smuggling shapes, odd targets.
RAW = {
    "NUL and control bytes in a header value": b"GET /livez HTTP/1.1\r\nHost: x\r\nX-A: a\x00\x01b\r\n\r\n",
    "two Content-Length": b"POST /v2/health/recordings/cleanup HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "Transfer-Encoding with Content-Length": b"POST /v2/health/recordings/cleanup HTTP/1.1\r\nHost: x\r\n"
                                            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad chunk size": b"POST /v2/health/recordings/cleanup HTTP/1.1\r\nHost: x\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\nzz\r\nnot hex\r\n0\r\n\r\n",
    "NUL in the path": b"GET /v2/health/streams/s\x001 HTTP/1.1\r\nHost: x\r\n\r\n",
    "0xff in the path": b"GET /v2/health/streams/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    "two Authorization headers": b"GET /v2/health/system HTTP/1.1\r\nHost: x\r\n"
                                 b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n",
    "absolute-URI target": b"GET http://elsewhere.example/livez HTTP/1.1\r\nHost: x\r\n\r\n",
    "asterisk target": b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "lowercase method": b"get /livez HTTP/1.1\r\nHost: x\r\n\r\n",
    "header without a colon": b"GET /livez HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    "space before the colon": b"GET /livez HTTP/1.1\r\nHost : x\r\n\r\n",
    "unknown HTTP version": b"GET /livez HTTP/9.9\r\nHost: x\r\n\r\n",
    "a 64 KiB target": b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
}
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND")
PATHS = ("/livez", "/v2/health/streams/s1")


def exchange(port: int, raw: bytes) -> tuple[int, bytes]:
    """Send ``raw`` and read the answer's head (the server may keep the connection); (status, head)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1."), f"no HTTP answer: {data[:200]!r}"
    return int(head.split()[1]), head


@pytest.fixture(scope="module")
def exporter(tmp_path_factory):
    """One agent (a cheap stream) and its exporter for the whole module: every case is one request."""
    port = free_port()
    cfg = config({"s1": CHEAP})
    cfg["exporter"] = {"listen": f"127.0.0.1:{port}"}
    agent = AgentProcess(tmp_path_factory.mktemp("hostile-http"), cfg).start()
    try:
        agent.wait_all("live", ["s1"])
        exporter = Exporter(agent, port)
        yield exporter
        exporter.stop()
    finally:
        try:
            agent.stop(timeout=30)
        finally:
            agent.kill()


@pytest.mark.parametrize("raw", RAW.values(), ids=RAW.keys())
def test_a_malformed_request_is_a_4xx_and_never_a_traceback(exporter, raw):
    status, _ = exchange(exporter.port, raw)
    assert 400 <= status < 500 or status == 200, status
    assert http(exporter.port, "/livez")[0] == 200
    assert "Traceback" not in exporter.log.read_text(errors="replace")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_a_read_route_is_answered_or_refused_with_allow(exporter, method, path):
    status, head = exchange(exporter.port, f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert status < 500, status
    if method in ("GET", "HEAD", "OPTIONS") and path == "/livez":
        assert status == 200
    if status == 405:
        assert b"\r\nAllow: " in head, head
    assert "Traceback" not in exporter.log.read_text(errors="replace")
