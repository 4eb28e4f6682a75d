"""Run the reference SFU (sfu/server.js) on real mediasoup from tests and benches.

mediasoup 3.8.4 is built once per machine by sfu/build-mediasoup.sh (which
``./install.sh --dev`` runs) into ``/var/cache/vas/mediasoup-3.8.4``; the app
finds it through NODE_PATH.  Nothing here is a double: every producer,
consumer and packet count comes from mediasoup itself.

    argv = sfu_command(port)              # for mediasoup.command (the agent supervises it)
    proc = start_real_sfu(port)           # a server the test runs on its own
    sfu = SharedSfu(tmp_dir); sfu.reset() # one server for several tests that do not kill it
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "sfu" / "server.js"
MEDIASOUP_VERSION = "3.8.4"
CACHE = Path(os.environ.get("VAS_MEDIASOUP_CACHE", f"/var/cache/vas/mediasoup-{MEDIASOUP_VERSION}"))
WORKER = CACHE / "node_modules" / "mediasoup" / "worker" / "out" / "Release" / "mediasoup-worker"


class SfuMissing(RuntimeError):
    """mediasoup is not built here: the message says how to build it."""


def node_binary() -> str:
    """The ``node`` that runs the reference app."""
    node = shutil.which("node")
    if node is None:
        raise SfuMissing("node not found: run ./install.sh --dev (it installs Node.js and builds mediasoup)")
    return node


def sfu_env() -> dict[str, str]:
    """The environment the app needs to find the cached mediasoup build."""
    if not WORKER.is_file():
        raise SfuMissing(f"mediasoup {MEDIASOUP_VERSION} is not built in {CACHE}: run ./install.sh --dev "
                         "(or sfu/build-mediasoup.sh; about 5 minutes, once per machine)")
    env = {k: v for k, v in os.environ.items() if k != "MEDIASOUP_WORKER_BIN"}
    env["NODE_PATH"] = str(CACHE / "node_modules")
    return env


def sfu_command(port: int, *extra: str) -> list[str]:
    """The argv of the reference SFU on 127.0.0.1:``port`` (for ``mediasoup.command``)."""
    sfu_env()  # fail early and clearly when mediasoup is missing
    return [node_binary(), str(SERVER), "--port", str(port), *extra]


def sfu_section_env() -> dict[str, str]:
    """``mediasoup.env`` for an agent that runs the app: where mediasoup is."""
    return {"NODE_PATH": sfu_env()["NODE_PATH"]}


def get(port: int, path: str) -> object:
    """GET the SFU's API and decode its JSON."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read() or b"null")


def call(port: int, method: str, path: str, body: dict | None = None) -> object:
    """Any call to the SFU's API; returns the decoded JSON (None for 204)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def healthy(port: int) -> bool:
    """Whether the app answers ``GET /health`` with 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_real_sfu(port: int, *extra: str, timeout: float = 20.0, log: Path | None = None) -> subprocess.Popen:
    """Start the reference SFU in its own session and wait until it is healthy."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(sfu_command(port, *extra), env=sfu_env(), stdout=out, stderr=out,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while not healthy(port):
        if proc.poll() is not None:
            raise RuntimeError(f"the reference SFU exited with {proc.returncode} before it was healthy")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the reference SFU was not healthy within {timeout:.0f} s")
        time.sleep(0.1)
    return proc


def consume_without_client(port: int, stream_id: str, client_id: str = "viewer") -> dict:
    """A real consumer of ``stream_id`` on a real WebRTC transport that no client connects to.

    Enough for heartbeat, expiry and force-close tests: the SFU lists it in
    ``GET /consumers`` and closes its transport on ``DELETE``.  The viewer's
    capabilities are the router's own.
    """
    viewer: dict = call(port, "POST", "/viewers", {"client_id": client_id})  # type: ignore[assignment]
    consumer: dict = call(port, "POST", f"/viewers/{viewer['viewer_id']}/consume",  # type: ignore[assignment]
                          {"stream_id": stream_id, "rtpCapabilities": viewer["routerRtpCapabilities"]})
    return {"viewer_id": viewer["viewer_id"], **consumer}


def producers_by_stream(port: int) -> dict[str, list[dict]]:
    """mediasoup's producers (``GET /producers``), grouped by stream id."""
    out: dict[str, list[dict]] = {}
    listed: list[dict] = get(port, "/producers")  # type: ignore[assignment]
    for p in listed:
        out.setdefault(p["stream_id"], []).append(p)
    return out


class SharedSfu:
    """One reference SFU shared by the tests of a module that do not kill it.

    ``reset()`` (before each test) closes every producer and viewer the last test
    left and marks where this test's part of the app's log begins: ``log()`` and
    ``closed()`` see only the current test.
    """

    def __init__(self, workdir: Path) -> None:
        from camera.fixture import free_port
        self.port = free_port()
        self.log_path = workdir / "sfu.log"
        self.proc = start_real_sfu(self.port, log=self.log_path)
        self._offset = 0

    def reset(self) -> None:
        """Close what earlier tests left (producers, consumers and their viewers)."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"the shared SFU exited with {self.proc.returncode}: {self.log_path}")
        listed: list[dict] = get(self.port, "/consumers")  # type: ignore[assignment]
        for c in listed:
            call(self.port, "DELETE", f"/consumers/{c['consumer_id']}")
        for p in get(self.port, "/producers"):  # type: ignore[attr-defined]
            call(self.port, "DELETE", f"/producers/{p['producer_id']}")
        self._offset = self.log_path.stat().st_size

    def log(self) -> str:
        """The app's log since the current test began."""
        with open(self.log_path, "rb") as fh:
            fh.seek(self._offset)
            return fh.read().decode(errors="replace")

    def closed(self) -> list[str]:
        """The app's ``closed producer ...`` lines since the current test began (who closed what)."""
        return [line for line in self.log().splitlines() if line.startswith("closed producer ")]

    def stop(self) -> None:
        """Stop the server and its worker (its own session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
