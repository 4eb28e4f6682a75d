"""A small client for the control socket (stdlib only, so vasctl starts fast)."""
from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Generator
from typing import Any, TypeVar

T = TypeVar("T")
#: The caller's deadline to *start* a request, in CLOCK_MONOTONIC seconds (system-wide on
#: Linux, immune to wall-clock steps; caller and agent share the host by the unix socket).
START_BY = "X-Vas-Start-By"


def start_by(within: float) -> dict[str, str]:
    """The header asking the agent to drop a request it has not started within ``within`` seconds."""
    return {START_BY: f"{time.monotonic() + within:.3f}"}


def too_late(header: str | None, now: float) -> bool:
    """True when a request carrying ``header`` reached its handler after its deadline.

    A caller that gave up (timeout) answered "not applied"; a request read later (the
    agent was stopped or hung meanwhile) must then not be applied behind its back.
    A malformed header counts as passed: refusing is the safe side.
    """
    if header is None:
        return False
    try:
        return not now <= float(header) < float("inf")
    except ValueError:
        return True


#: The Content-Type of an answer in lines: the first line is the answer's object, and each
#: further line a JSON array of up to LINE_ITEMS items (each an array, read back as a tuple) of
#: the list the object names in ``"lines"``.  A month of segments is 100,000 items: in lines, no
#: single ``json`` call takes more than a few milliseconds, and each line's lists become tuples at
#: once (the cyclic collector drops tuples of plain values; 100,000 lists it walks again and again).
LINES = "application/x-ndjson"
LINE_ITEMS = 2000


def in_lines(head: dict[str, Any], key: str, items: list[Any]) -> bytes:
    """``head`` with ``items`` under ``key``, as a :data:`LINES` answer."""
    lines = [json.dumps({**head, "lines": key}, separators=(",", ":"))]
    lines += [json.dumps(items[i:i + LINE_ITEMS], separators=(",", ":")) for i in range(0, len(items), LINE_ITEMS)]
    return ("\n".join(lines) + "\n").encode()


def reading_lines(body: bytes) -> Generator[None, None, dict[str, Any]]:
    """Read a :data:`LINES` answer one line per step; its object (the list put back together,
    of tuples) is the generator's return value.  ValueError when it is malformed."""
    first, _, rest = body.partition(b"\n")
    head = json.loads(first)
    if not isinstance(head, dict) or not isinstance(head.get("lines"), str):
        raise ValueError("the first line is not an answer object naming its lines")
    items: list[Any] = []
    for line in rest.splitlines():
        yield
        part = json.loads(line)
        if not isinstance(part, list) or not all(isinstance(item, list) for item in part):
            raise ValueError("a line is not a JSON array of arrays")
        items += map(tuple, part)
    head[head.pop("lines")] = items
    return head


def at_once(steps: Generator[None, None, T]) -> T:
    """Run a generator of steps (:func:`reading_lines`, or long work that pauses between its
    pieces) to its end without pausing; its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def from_lines(body: bytes) -> dict[str, Any]:
    """The object of a :data:`LINES` answer, read at once."""
    return at_once(reading_lines(body))


class AgentUnreachable(Exception):
    """The control socket is missing or nobody answers on it."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path, self._wait = path, timeout

    def connect(self) -> None:
        # A unix socket whose accept queue is full says EAGAIN at once where TCP would wait:
        # wait here too (within the timeout), as a burst of other clients drains.
        deadline = time.monotonic() + self._wait
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(self.timeout)
            try:
                self.sock.connect(self._path)
                return
            except BlockingIOError:
                self.sock.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)


def request(socket_path: str, method: str, path: str, *, timeout: float = 60.0,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """``(status, json_body)`` of one request to the agent."""
    conn = _UnixConnection(socket_path, timeout)
    try:
        conn.request(method, path, headers={"Content-Length": "0", **(headers or {})})
        resp = conn.getresponse()
        body = resp.read()
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise AgentUnreachable(f"cannot reach vas-agent at {socket_path}: {exc.strerror}; is it running?") from None
    except PermissionError:
        raise AgentUnreachable(f"permission denied on {socket_path}: run as root or as a member of group vas") from None
    except (OSError, http.client.HTTPException) as exc:
        raise AgentUnreachable(f"no answer from vas-agent at {socket_path}: {exc}") from None
    finally:
        conn.close()
    try:
        if resp.getheader("Content-Type", "").startswith(LINES):
            return resp.status, from_lines(body)
        return resp.status, json.loads(body or b"{}")
    except ValueError:
        return resp.status, {"error": body.decode(errors="replace")[:200]}
