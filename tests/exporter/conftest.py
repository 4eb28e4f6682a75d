"""Fixtures for the exporter: a snapshot file like the agent writes, settings, tokens."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from agent import snapshot, tokens
from agent.config.exporter import Settings
from exporter.app import create_app

PASSWORD = "s3cr3t-camera-pw"


def stream(sid: str, state: str = "live", **extra: Any) -> dict[str, Any]:
    now = time.time()
    return {"id": sid, "name": sid, "enabled": state != "stopped", "url": f"rtsp://admin:***@10.0.0.5/{sid}",
            "mode": "rtsp", "state": state, "since": now, "pid": None, "pid_started_at": None, "restarts": 1,
            "restart_reasons": {"exit": 1}, "last_exit": None, "last_error": ["rtsp://admin:***@10.0.0.5: refused"],
            "next_restart_at": None,
            "progress": {"fps": 25.0, "frames": 100, "bytes": 5000, "out_time_seconds": 4.0, "last_progress_at": now},
            "producer": None, "recording": {"enabled": True, "segment_duration_seconds": 10.0,
                                            "retention_seconds": 604800.0}, **extra}


def snapshot_dict(streams: list[dict[str, Any]], *, status: str = "running", root: str = "/tmp",
                  **extra: Any) -> dict[str, Any]:
    return {"version": 1, "agent": {"pid": 1, "started_at": time.time() - 60, "status": status,
                                    "runtime_dir": "/run/vas"},
            "config": {"path": "/etc/vas/streams.yaml", "sha256": "x", "recordings_root": root,
                       "last_reload": {"ok": True, "at": time.time(), "summary": "unchanged: 2"},
                       "needs_restart": []},
            "streams": streams, **extra}


class Node:
    """A runtime dir with a snapshot the tests rewrite, and a tokens file."""

    def __init__(self, tmp: Path) -> None:
        self.runtime = tmp / "run"
        self.runtime.mkdir()
        self.tokens_file = tmp / "tokens"
        self.admin = tokens.add(self.tokens_file, "ops", "admin")
        self.heartbeat = tokens.add(self.tokens_file, "player", "heartbeat")
        self.settings = Settings(config_path=tmp / "streams.yaml", runtime_dir=self.runtime,
                                 tokens_file=self.tokens_file, stale_after=5.0)
        self.write(snapshot_dict([stream("cam1"), stream("cam2", "error")], root=str(tmp)))

    def write(self, data: dict[str, Any]) -> None:
        snapshot.write_atomic(self.runtime / snapshot.SNAPSHOT_NAME, data)

    def age(self, seconds: float) -> None:
        then = time.time() - seconds
        import os
        os.utime(self.runtime / snapshot.SNAPSHOT_NAME, (then, then))


@pytest.fixture
def node(tmp_path) -> Node:
    return Node(tmp_path)


@pytest.fixture
def aiohttp_client(aiohttp_client):
    """pytest-aiohttp's, plus: every answer of an exporter app is checked against
    /v2/openapi.json (tests/exporter/openapi_check.py) and must say how long it may be cached
    (``no-store`` unless the route sets its own; the OpenAPI document alone is static);
    a disagreement fails the test."""
    from aiohttp import web

    from .openapi_check import recorder
    found: list[str] = []

    async def make(app, *args, **kwargs):
        if isinstance(app, web.Application):
            app.on_response_prepare.append(recorder(found))
            app.on_response_prepare.append(cache_rule(found))
        return await aiohttp_client(app, *args, **kwargs)
    yield make
    assert found == [], ("answers the OpenAPI document does not describe, or without Cache-Control:\n"
                         + "\n".join(dict.fromkeys(found)))


def cache_rule(found: list[str]):
    """An ``on_response_prepare`` hook: an answer without Cache-Control (a streamed one a
    handler prepared itself, an error aiohttp answered) is appended to ``found``."""
    async def check(request, response) -> None:
        if request.path != "/v2/openapi.json" and "Cache-Control" not in response.headers:
            found.append(f"{request.method} {request.path} -> {response.status}: no Cache-Control")
    return check


@pytest.fixture
async def client(aiohttp_client, node):
    return await aiohttp_client(create_app(node.settings))
