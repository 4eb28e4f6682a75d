"""The tokens file and the Authorization header as untrusted input, against a real agent and a
real vas-exporter process over real HTTP: bad bytes never stop the exporter or answer 5xx, a
file others may write is refused, a bad line drops only itself, and edits apply without a
SIGHUP."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from camera.fixture import free_port
from tests.integration.harness import BIN, CHEAP, config, wait_for
from tests.integration.test_exporter import Exporter, http

pytestmark = [pytest.mark.integration, pytest.mark.slow]
HEARTBEAT = "/v2/health/consumers/c1/heartbeat"
#: A token pasted where its hash belongs: an error may say which line, never print this.
PASTED = "Pasted-token-Vq3xLk9"


class Node:
    """A real agent (one cheap stream), its exporter process and the tokens file they use."""

    def __init__(self, agent_factory, tmp_path: Path) -> None:
        self.port = free_port()
        self.tokens = tmp_path / "tokens"
        cfg = config({"s1": CHEAP})
        cfg["exporter"] = {"listen": f"127.0.0.1:{self.port}", "tokens_file": str(self.tokens)}
        self.agent = agent_factory(cfg).start()
        self.agent.wait_all("live", ["s1"])
        self.ops = self.vasctl("add", "ops", "--scope", "admin").stdout.split()[-1]
        self.exporter: Exporter | None = None

    def start_exporter(self) -> Exporter:
        self.exporter = Exporter(self.agent, self.port)
        return self.exporter

    def vasctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "vasctl"), "token", "--tokens-file", str(self.tokens), *args],
                              capture_output=True, text=True, timeout=30)

    def heartbeat(self, token: str) -> tuple[int, str]:
        """404 "unknown consumer" means the token was accepted and the agent answered."""
        return http(self.port, HEARTBEAT, "POST", token)

    def log(self) -> str:
        return (self.agent.workdir / "exporter.log").read_text(errors="replace")

    def write_lines(self, *lines: bytes, mode: int = 0o640) -> None:
        """Edit the file in place, as an editor would (same inode)."""
        with open(self.tokens, "wb") as fh:
            fh.write(b"".join(line + b"\n" for line in lines))
        os.chmod(self.tokens, mode)


def line(name: str, scope: str, token: str) -> bytes:
    return f"{name} {scope} {hashlib.sha256(token.encode()).hexdigest()}".encode()


@pytest.fixture
def node(agent_factory, tmp_path):
    made = Node(agent_factory, tmp_path)
    yield made
    if made.exporter is not None:
        made.exporter.stop()
    log = made.log() if made.exporter is not None else ""
    assert "Traceback" not in log and PASTED not in log and made.ops not in log


def raw_post(port: int, authorization: bytes) -> tuple[int, dict[str, str], str]:
    """POST the heartbeat with these exact header bytes (no client library re-encodes them)."""
    request = (f"POST {HEARTBEAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n"
               .encode() + b"Authorization: " + authorization + b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body.decode("utf-8", "replace")


def test_bad_bytes_in_the_tokens_file_never_stop_the_exporter(node):
    """Item 18: start, SIGHUP and vasctl with non-UTF-8 bytes and a pasted token in the file."""
    good = node.tokens.read_bytes().splitlines()
    node.write_lines(*good, b"\xff\xfe player heartbeat", f"oops admin {PASTED}".encode())
    check = subprocess.run([str(BIN / "vas-exporter"), "--config", str(node.agent.config_path), "--check"],
                           capture_output=True, text=True, timeout=30)  # ExecStartPre: must not block the start
    assert check.returncode == 0 and f"warning: {node.tokens}:3: a byte that is not ASCII" in check.stderr, check
    assert PASTED not in check.stdout + check.stderr
    exporter = node.start_exporter()  # waits for /livez: it started
    assert http(node.port, "/v2/health/system")[0] == 200
    status, body = node.heartbeat(node.ops)
    assert status == 404 and "unknown consumer" in body, (status, body)
    wait_for(lambda: f"{node.tokens}:3: a byte that is not ASCII" in node.log(), 5, "the bad line in the log")
    assert f"{node.tokens}:4: the third field is not a SHA-256" in node.log()
    # SIGHUP with more bad bytes, and a token added by hand in the same edit: the whole reload runs.
    late = "Late-token-Aa1"
    node.write_lines(*good, b"\x80", line("late", "admin", late))
    exporter.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reloaded settings and tokens" in node.log(), 5, "the reload to finish")
    assert node.heartbeat(late)[0] == 404 and exporter.proc.poll() is None
    out = node.vasctl("list")
    assert out.returncode == 1 and out.stdout.split("\n")[:2] == ["ops\tadmin", "late\tadmin"], out
    assert f"{node.tokens}:3: a byte that is not ASCII" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("value", [b"Bearer \xff\xfe", b"\xff\xfe", b"Bearer abc\xe9", b"Bearer \xc3\xa9t\xc3\xa9",
                                   b"Bearer a b", b"Bearer", b"Basic Zm9vOmJhcg=="])
def test_a_malformed_authorization_header_is_a_401_in_json(node, value):
    """Item 18: raw header bytes over a real socket: 401 JSON, never a 500 or a traceback."""
    node.start_exporter()
    status, headers, body = raw_post(node.port, value)
    assert status == 401 and headers["content-type"].startswith("application/json"), (status, body)
    assert "error" in json.loads(body) and headers["www-authenticate"].startswith("Bearer")
    # The valid token with a stray byte after it is not the valid token.
    assert raw_post(node.port, b"Bearer " + node.ops.encode() + b"\xff")[0] == 401
    assert raw_post(node.port, b"Bearer " + node.ops.encode())[0] == 404  # and the clean one works


@pytest.mark.parametrize("mode", [0o666, 0o660, 0o642])
def test_a_tokens_file_others_may_write_is_refused_until_fixed(node, mode):
    """Item 19: like sshd: no token from a group/other-writable file; fixing it needs no SIGHUP."""
    node.tokens.chmod(mode)
    node.start_exporter()
    status, body = node.heartbeat(node.ops)
    assert status == 503 and "refused its tokens file" in json.loads(body)["error"], (status, body)
    assert f"(mode {mode:04o})" in node.log() and "no token in it is accepted" in node.log()
    assert http(node.port, "/v2/health/system")[0] == 200  # read routes are not affected
    assert node.vasctl("list").returncode == 1
    node.tokens.chmod(0o640)
    assert node.heartbeat(node.ops)[0] == 404  # the next request: no SIGHUP
    node.tokens.chmod(mode)  # and back: refused again at once
    assert node.heartbeat(node.ops)[0] == 503


def test_one_bad_line_drops_only_itself_and_a_token_removed_in_the_same_edit_is_refused(node):
    """Item 19: the edit applies (minus its bad line), never the whole previous list."""
    old = node.vasctl("add", "old", "--scope", "admin").stdout.split()[-1]
    node.start_exporter()
    assert node.heartbeat(old)[0] == 404
    kept = [ln for ln in node.tokens.read_bytes().splitlines() if not ln.startswith(b"old ")]
    node.write_lines(*kept, b"broken admin 1234")  # remove `old`, add a bad line: one edit
    assert node.heartbeat(old)[0] == 401
    assert node.heartbeat(node.ops)[0] == 404
    wait_for(lambda: f"{node.tokens}:3: the third field is not a SHA-256" in node.log(), 5, "the bad line logged")


def test_tokens_added_and_removed_by_vasctl_apply_without_a_sighup(node):
    """Item 19: vasctl token add/remove, then the very next request."""
    node.start_exporter()
    added = node.vasctl("add", "fresh", "--scope", "heartbeat").stdout
    assert "vas-exporter accepts it from its next request on" in added  # and it does
    fresh = added.split()[-1]
    assert node.heartbeat(fresh)[0] == 404
    assert node.vasctl("remove", "fresh").returncode == 0
    assert node.heartbeat(fresh)[0] == 401
    node.tokens.unlink()  # no file at all: nothing is accepted, and the exporter says so
    assert node.heartbeat(node.ops)[0] == 401
    wait_for(lambda: "does not exist: no token is accepted" in node.log(), 5, "the missing file logged")
