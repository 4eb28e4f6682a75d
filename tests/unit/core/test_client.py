"""The control socket's client (agent/client.py) against a real unix socket."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from agent.client import request


def test_a_full_accept_queue_is_waited_for_not_taken_for_a_dead_agent(tmp_path):
    # A unix socket with a full accept queue fails connect() at once (EAGAIN) where TCP waits:
    # vasctl said "no answer from vas-agent" while a burst of other clients drained.
    path = str(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(0)
    queued = []
    while True:  # fill the queue
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect(path)
        except BlockingIOError:
            c.close()
            break
        queued.append(c)

    def serve() -> None:
        time.sleep(0.5)
        for _ in queued:
            server.accept()[0].close()
        conn, _ = server.accept()
        conn.recv(65536)
        body = b'{"ok": true}'
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert request(path, "GET", "/status", timeout=10) == (200, {"ok": True})
    finally:
        thread.join(10)
        for c in queued:
            c.close()
        server.close()


def test_an_answer_in_lines_comes_back_whole_and_no_line_is_long():
    from agent.client import LINE_ITEMS, from_lines, in_lines
    segments = [(f"2026-06-01/cam_{i:07d}.ts", 1780000000.0 + 2 * i, 2.0, 1000 + i, None)
                for i in range(5 * LINE_ITEMS + 7)]
    body = in_lines({"stream_id": "cam", "truncated": False}, "segments", segments)
    lines = body.splitlines()
    assert len(lines) == 1 + 6 and max(len(line) for line in lines) < 100 * LINE_ITEMS
    assert from_lines(body) == {"stream_id": "cam", "truncated": False, "segments": segments}
    assert from_lines(in_lines({"a": 1}, "segments", [])) == {"a": 1, "segments": []}


@pytest.mark.parametrize("body", [b"", b"[1]\n", b'{"a": 1}\n[1]\n', b'{"lines": "s"}\n{"x": 1}\n',
                                  b'{"lines": "s"}\n[1, \n', b'{"lines": "s"}\n[[1], 2]\n'])
def test_a_malformed_answer_in_lines_is_a_value_error(body):
    from agent.client import from_lines
    with pytest.raises(ValueError):
        from_lines(body)
