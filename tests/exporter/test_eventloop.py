"""The exporter's event loop: uvloop unless VAS_EXPORTER_LOOP says asyncio; a bad value stops
vas-exporter (and its --check, the unit's ExecStartPre) with one line naming it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import uvloop

from camera.fixture import free_port
from exporter.eventloop import ENV, LoopError, chosen, loop_factory
from tests.integration.harness import wait_for

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(("value", "loop"), [(None, "uvloop"), ("", "uvloop"), ("uvloop", "uvloop"),
                                             (" UVLoop ", "uvloop"), ("asyncio", "asyncio")])
def test_the_loop_asked_for(value, loop):
    assert chosen({} if value is None else {ENV: value}) == loop


def test_uvloop_is_built_by_uvloop_and_asyncio_by_asyncio_itself():
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None  # asyncio.Runner's own


def test_a_loop_nobody_has_is_refused_naming_the_variable_and_the_choices():
    with pytest.raises(LoopError, match=r"VAS_EXPORTER_LOOP='trio': want one of uvloop, asyncio"):
        chosen({ENV: "trio"})


def write_config(tmp: Path, port: int) -> Path:
    conf = tmp / "streams.yaml"
    conf.write_text(json.dumps({"version": 1, "node": {"runtime_dir": str(tmp / "run")}, "streams": {},
                                "exporter": {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp / "tokens")}}))
    return conf


def serving_line(tmp: Path, env: dict[str, str]) -> str:
    """The start-up line of a real vas-exporter run with ``env``, once it answers /livez."""
    port, log = free_port(), tmp / "exporter.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN / "vas-exporter"), "--config", str(write_config(tmp, port))],
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**{k: v for k, v in os.environ.items() if k != ENV}, **env})
    try:
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2).status == 200, 15,
                 "the exporter")
        return next(line for line in log.read_text().splitlines() if "serving http" in line)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


@pytest.mark.slow
@pytest.mark.parametrize(("env", "loop"), [({}, "uvloop"), ({ENV: "asyncio"}, "asyncio")])
def test_the_exporter_serves_on_the_loop_it_was_asked_for_and_says_so(tmp_path, env, loop):
    """The line names the loop actually running (its class's package), not the one asked for."""
    assert serving_line(tmp_path, env).endswith(f"; {loop}'s event loop)")


@pytest.mark.slow
@pytest.mark.parametrize("check", [True, False])
def test_a_bad_loop_stops_the_exporter_and_its_check_with_one_line(tmp_path, check):
    conf = write_config(tmp_path, free_port())
    done = subprocess.run([str(BIN / "vas-exporter"), "--config", str(conf), *(["--check"] if check else [])],
                          env={**os.environ, ENV: "libuv"}, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("vas-exporter: VAS_EXPORTER_LOOP='libuv': want one of uvloop, asyncio "
                           "(or leave it unset)\n")
