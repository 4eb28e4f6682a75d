"""The control socket under abuse: malformed HTTP, a huge body, slow and many clients.
The agent never crashes, streams keep their processes, /status keeps answering, and the
event loop is never blocked long (its own lag histogram, and /status round trips)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.client import request
from tests.integration.harness import CHEAP, config, wait_for

pytestmark = pytest.mark.integration
MALFORMED = [
    b"\x00\x01\x02garbage\r\n\r\n", b"GET\r\n\r\n", b"GET /status HTTP/9.9\r\n\r\n",
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /status HTTP/1.1\r\n" + b"X-Big: " + b"b" * 200_000 + b"\r\n\r\n",
    b"GET /status HTTP/1.1\r\nBad Header Line\r\n\r\n",
    b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\nabc",
    b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot hex\r\n0\r\n\r\n",
    b"POST /streams/%00%ff/restart HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
]
#: The well-behaved client: /status every 50 ms until its stdin closes, then its round trips (s) as JSON.
#: A process of its own, not a thread beside the abusers, which share this process's GIL: once in
#: CI (a loaded host) a round trip took 1.8 s while the agent's loop lag stayed under 37 ms, so the
#: wait was not the agent's; a probe thread waits on the abusers whenever a GIL holder is off the CPU.
PROBE = """
import json, select, sys, time
from agent.client import request
times = []
while not select.select([sys.stdin], [], [], 0.05)[0]:
    started = time.monotonic()
    code, _ = request(sys.argv[1], "GET", "/status")
    times.append(time.monotonic() - started)
    assert code == 200, code
print(json.dumps(times))
"""


def connect(path: Path) -> socket.socket:
    """A connection, waiting (up to 10 s) while the listen backlog is full: a unix socket's
    connect with a timeout set says EAGAIN then, where a TCP one would wait."""
    deadline = time.monotonic() + 10
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(str(path))
            return s
        except BlockingIOError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def send_and_close(path: Path, data: bytes) -> None:
    try:
        s = connect(path)
    except OSError:
        return  # the listen backlog is full for a moment: the abuse goes on
    try:
        s.sendall(data)
        s.recv(65536)
    except OSError:
        pass  # the agent may close on us: that is fine
    finally:
        s.close()


@pytest.mark.slow
def test_malformed_huge_slow_and_many_clients_never_hurt_the_agent(agent_factory):
    agent = agent_factory(config({"cam1": CHEAP, "cam2": CHEAP})).start()
    pids = {sid: s["pid"] for sid, s in agent.wait_all("live", ["cam1", "cam2"], timeout=30).items()}
    sock = agent.runtime_dir / "agent.sock"

    def slowloris(n: int) -> None:
        conns = []
        for _ in range(n):
            try:
                conns.append(connect(sock))
            except OSError:
                break
        for i in range(20):  # a byte each 0.25 s for 5 s
            for c in conns:
                try:
                    c.send(b"GET /status HTTP/1.1\r\n"[i:i + 1] or b"X")
                except OSError:
                    pass
            time.sleep(0.25)
        for c in conns:
            c.close()

    def huge_body() -> None:
        s = connect(sock)
        try:
            s.sendall(b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 52428800\r\n\r\n")
            chunk = b"y" * 65536
            for _ in range(800):
                s.sendall(chunk)
        except OSError:
            pass  # refused part way: fine
        finally:
            s.close()

    def many(n: int) -> None:
        for i in range(n):
            send_and_close(sock, MALFORMED[i % len(MALFORMED)])

    def lag_now() -> dict:  # /status renders the snapshot now: the lag histogram is current
        return request(str(sock), "GET", "/status")[1]["agent"]["event_loop_lag_seconds"]
    lag_before = lag_now()
    threads = [threading.Thread(target=slowloris, args=(200,)), threading.Thread(target=huge_body),
               threading.Thread(target=many, args=(400,)), threading.Thread(target=many, args=(400,))]
    started = time.monotonic()
    probe = subprocess.Popen([sys.executable, "-c", PROBE, str(sock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    time.sleep(2)  # two more heartbeats after the abuse
    out, _ = probe.communicate("", timeout=30)  # its stdin closed: it stops
    assert probe.returncode == 0
    status_times = json.loads(out)
    assert agent.proc is not None and agent.proc.poll() is None, agent.log()[-2000:]
    lag = lag_now()
    beats = lag["count"] - lag_before["count"]
    print(f"\nabuse {time.monotonic() - started:.1f}s: {len(status_times)} /status round trips, max "
          f"{max(status_times) * 1000:.1f} ms; heartbeat lag max {lag['max'] * 1000:.1f} ms over {beats} beats")
    assert max(status_times) < 1.0, "a well-behaved client waited on the abuse"
    assert beats >= 5 and lag["max"] < 0.5  # generous here; the 100 ms goal is bench/fuzz.py's figure
    assert {sid: s["pid"] for sid, s in agent.streams().items()} == pids
    code, body = request(str(sock), "GET", "/status")
    assert code == 200 and json.loads(json.dumps(body))
    assert "Traceback" not in agent.log()


def test_a_huge_body_is_refused_with_413(agent_factory):
    agent = agent_factory(config({"cam1": CHEAP})).start()
    s = connect(agent.runtime_dir / "agent.sock")
    s.sendall(b"POST /consumers/x/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n"
              b"Content-Type: application/json\r\n\r\n" + b"{" * 65536)
    answer = b""
    try:
        while b"\r\n\r\n" not in answer:
            data = s.recv(4096)
            if not data:
                break
            answer += data
    except OSError:
        pass
    s.close()
    assert answer.startswith(b"HTTP/1.1 413") or answer.startswith(b"HTTP/1.1 404"), answer[:200]
    wait_for(lambda: agent.proc is not None and agent.proc.poll() is None, 1, "the agent alive")
