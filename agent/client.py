"""A small client for the control socket (stdlib only, so vasctl starts fast)."""
from __future__ import annotations

import http.client
import json
import socket
from typing import Any


class AgentUnreachable(Exception):
    """The control socket is missing or nobody answers on it."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def request(socket_path: str, method: str, path: str, *, timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
    """``(status, json_body)`` of one request to the agent."""
    conn = _UnixConnection(socket_path, timeout)
    try:
        conn.request(method, path, headers={"Content-Length": "0"})
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
        return resp.status, json.loads(body or b"{}")
    except ValueError:
        return resp.status, {"error": body.decode(errors="replace")[:200]}
