"""schemathesis on the exporter's own /v2/openapi.json, against a real vas-exporter in
front of a real agent: without a token and with an admin token.  No 5xx, every answer
as documented, and nothing changes without a valid token."""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from camera.fixture import free_port
from tests.integration.harness import BIN, CHEAP, AgentProcess, config, wait_for
from tests.integration.test_exporter import Exporter

#: One worker runs this module's tests, so its module-scoped node is built once, not once per worker.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("http_fuzz")]
STREAM = {**CHEAP, "recording": {"retention": "30d"}}
EXAMPLES = int(os.environ.get("VAS_FUZZ_EXAMPLES", "25"))  # per operation; bench/fuzz.py raises it


class Node:
    def __init__(self, workdir) -> None:
        workdir.mkdir()
        self.port = free_port()
        cfg = config({"cam1": STREAM, "cam2": STREAM})
        cfg["exporter"] = {"listen": f"127.0.0.1:{self.port}", "tokens_file": str(workdir / "tokens")}
        self.agent = AgentProcess(workdir, cfg)
        self.agent.start()
        self.agent.wait_all("live", ["cam1", "cam2"], timeout=30)
        self.token = subprocess.run(
            [str(BIN / "vasctl"), "--config", str(self.agent.config_path), "token", "add", "fuzz", "--scope",
             "admin"], capture_output=True, text=True, check=True).stdout.split()[-1]
        self.exporter = Exporter(self.agent, self.port)
        old = time.time() - 10 * 86400
        self.planted = []
        for sid in ("cam1", "cam2"):
            path = self.agent.recordings / sid / f"{sid}_20200101T000000000Z_000001.ts"
            path.write_bytes(b"x" * 1024)
            os.utime(path, (old, old))
            self.planted.append(path)

    def state(self) -> dict[str, Any]:
        streams = self.agent.streams()
        return {"pids": {sid: s["pid"] for sid, s in streams.items()},
                "restarts": {sid: s["restarts"] for sid, s in streams.items()},
                "planted": [p.exists() for p in self.planted]}

    def close(self) -> None:
        self.exporter.stop()
        self.agent.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("http-fuzz") / "a")
    yield n
    n.close()


FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                database=None)


def fuzz(node: Node, check: Any) -> int:
    """Every operation of the served OpenAPI document through schemathesis's generated cases.

    (schemathesis's own pytest plugin does not run under this pytest yet; its loader and
    per-operation strategies do the same work here.)
    """
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{node.port}/v2/openapi.json")
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]

        @FUZZ
        @given(operation.as_strategy())
        def run(case: Any) -> None:
            nonlocal calls
            calls += 1
            check(case)
        run()
    return calls


@pytest.mark.timeout(300)  # 190 requests, each with two reads of the node: 70-120 s in a loaded CI run
def test_without_a_token_no_5xx_as_documented_and_nothing_changes(node):
    def check(case: Any) -> None:
        before = node.state()
        response = case.call()
        assert response.status_code < 500, (case.method, case.formatted_path, response.text[:300])
        case.validate_response(response)
        if case.method in ("POST", "DELETE", "PUT", "PATCH"):
            assert response.status_code in (400, 401, 404, 405), (case.method, case.formatted_path,
                                                                   response.status_code)
        assert node.state() == before, f"{case.method} {case.formatted_path} changed the node without a token"
    calls = fuzz(node, check)
    print(f"\nschemathesis without a token: {calls} requests, 0 5xx, 0 schema violations, 0 changes")


def test_with_an_admin_token_no_5xx_and_as_documented(node):
    def check(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Bearer {node.token}"})
        assert response.status_code < 500, (case.method, case.formatted_path, response.text[:300])
        case.validate_response(response)
    calls = fuzz(node, check)
    print(f"\nschemathesis with an admin token: {calls} requests, 0 5xx, 0 schema violations")


def test_the_agent_and_exporter_survived_the_fuzzing(node):
    assert node.agent.proc is not None and node.agent.proc.poll() is None
    assert node.exporter.proc.poll() is None
    wait_for(lambda: all(s["state"] == "live" for s in node.agent.streams().values()), 30, "streams live")
    assert "Traceback" not in node.agent.log() and "Traceback" not in node.exporter.log.read_text()
