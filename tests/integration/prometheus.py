"""A real Prometheus (Debian's) scraping an exporter on loopback, for tests."""
from __future__ import annotations

import json
import subprocess
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from camera.fixture import free_port

from .test_exporter import http


class Prometheus:
    """Query a running Prometheus: ``query(expr) -> (status, results)``."""

    def __init__(self, port: int) -> None:
        self.port = port

    def query(self, expr: str) -> tuple[str, list]:
        code, body = http(self.port, "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if code != 200:
            return "error", []
        data = json.loads(body)
        return data["status"], data.get("data", {}).get("result", [])


@contextmanager
def scraping(exporter_port: int, workdir: Path, *, http_sd: bool = False) -> Iterator[Prometheus]:
    """Prometheus scraping ``/v2/metrics`` every second (with ``http_sd``: every target the
    exporter's ``/v2/fleet/targets`` lists); stopped on the way out."""
    port = free_port()
    job: dict = {"job_name": "vas", "metrics_path": "/v2/metrics"}
    if http_sd:
        job["http_sd_configs"] = [{"url": f"http://127.0.0.1:{exporter_port}/v2/fleet/targets",
                                   "refresh_interval": "1s"}]
    else:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{exporter_port}"]}]
    (workdir / "prom.yml").write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": [job]}))
    proc = subprocess.Popen(["prometheus", f"--config.file={workdir / 'prom.yml'}",
                             f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield Prometheus(port)
    finally:
        proc.terminate()
        proc.wait(15)
