"""A real node for the console's browser tests: the RTSP test camera, vas-agent, vas-exporter.

Only the HTTP contract between the exporter and the page is assumed (the exporter's routes,
docs/api.md); nothing here reaches into the exporter's code.
"""
from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from camera.fixture import SUITE_FPS, RtspCamera, free_port
from tests.integration.harness import BIN, CHEAP, AgentProcess, config, wait_for

PASSWORD = "Zk7-console-secret"
USER = "admin"
#: A ball on a blue background: the picture is mostly non-black, so a black frame is caught.
BACKGROUND = "0xff3060a0"


def http(port: int, path: str, token: str | None = None, timeout: float = 15) -> tuple[int, bytes, dict[str, str]]:
    """GET ``path`` from the exporter: (status, body, headers), errors included."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


class ConsoleNode:
    """Camera(s), agent and exporter; ``close()`` stops all of them (safe to call twice)."""

    def __init__(self, workdir: Path, streams: dict[str, dict[str, Any]] | None = None,
                 cheap: int = 0) -> None:
        self.workdir = workdir
        self.camera = RtspCamera(("cam1", "cam2"), background=BACKGROUND, fps=SUITE_FPS)
        self.locked = RtspCamera(("cam1",), user=USER, password=PASSWORD, background=BACKGROUND, fps=SUITE_FPS)
        self.port = free_port()
        self.agent: AgentProcess | None = None
        self.exporter: subprocess.Popen[bytes] | None = None
        self.tokens = workdir / "tokens"
        self.streams = streams
        self.cheap = cheap

    def start(self) -> ConsoleNode:
        """Start everything; the real streams are live and the exporter answers."""
        self.camera.start()
        self.locked.start()
        streams = self.streams or {
            "cam1": {"name": "Gate", "url": self.camera.url("cam1")},
            "cam2": {"name": "Yard", "url": self.camera.url("cam2")},
            "locked": {"name": "Office", "url": self.locked.url("cam1", user=USER, password=PASSWORD)},
        }
        streams = {**streams, **{f"cheap{i:03d}": dict(CHEAP) for i in range(self.cheap)}}
        cfg = config(streams)
        cfg["exporter"] = {"listen": f"127.0.0.1:{self.port}", "tokens_file": str(self.tokens)}
        self.agent = AgentProcess(self.workdir, cfg).start()
        real = [sid for sid in streams if not sid.startswith("cheap")]
        self.agent.wait_all("live", real, timeout=60)
        with open(self.workdir / "exporter.log", "ab") as log:
            self.exporter = subprocess.Popen([str(BIN / "vas-exporter"), "--config", str(self.agent.config_path)],
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: http(self.port, "/livez")[0] == 200, 20, "the exporter")
        self.viewer = self.token("console", "viewer")
        return self

    def token(self, name: str, scope: str) -> str:
        """A new token of ``scope``, made as an operator makes it (vasctl)."""
        assert self.agent is not None
        out = self.agent.vasctl("token", "add", name, "--scope", scope)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.split()[-1]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def status(self) -> dict[str, Any]:
        """The console's status document, as the page reads it."""
        code, body, _ = http(self.port, "/v2/console/streams")
        assert code == 200, body
        return json.loads(body)

    def stream_status(self, sid: str) -> dict[str, Any]:
        return next(s for s in self.status()["streams"] if s["id"] == sid)

    def recorded_for(self, sid: str, seconds: float) -> list[list[float]]:
        """Wait until the timeline of ``sid`` holds ``seconds`` of one unbroken range; its ranges."""
        def enough() -> Any:
            code, body, _ = http(self.port, f"/v2/recordings/{sid}/timeline", self.viewer)
            ranges = json.loads(body)["ranges"] if code == 200 else []
            return ranges and ranges[-1][1] - ranges[-1][0] >= seconds and ranges
        return wait_for(enough, seconds + 40, f"{seconds} s recorded of {sid}", interval=0.5)

    def close(self) -> None:
        if self.exporter is not None and self.exporter.poll() is None:
            self.exporter.terminate()
            self.exporter.wait(10)
        if self.agent is not None:
            try:
                self.agent.stop(timeout=30)
            finally:
                self.agent.kill()
        self.locked.close()
        self.camera.close()

    def logs(self) -> str:
        """The agent's and the exporter's logs (for the credential scan and failure messages)."""
        exporter_log = self.workdir / "exporter.log"
        return (self.agent.log() if self.agent else "") + (exporter_log.read_text(errors="replace")
                                                         if exporter_log.exists() else "")
