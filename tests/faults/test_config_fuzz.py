"""Hostile config files (tests/faults/fuzzing.py): the loader, `vas-agent --check` and a
running agent's reload.  bench/fuzz.py runs 10,000 cases; CI a few hundred."""
from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.fuzzing import ENV, attacks, check_load, structured_config
from tests.integration.harness import BIN, config, wait_for


def test_structured_configs_load_or_name_a_line(tmp_path):
    """300 seeded configs (drawn through hypothesis they cost 7 s of CPU alone, 60-130 s in a
    loaded CI run, against its 120 s limit; bench/fuzz.py runs 10,000)."""
    for seed in range(300):
        data = structured_config(random.Random(seed))
        try:
            check_load(tmp_path / "streams.yaml", data)
        except BaseException as exc:
            raise AssertionError(f"seed {seed}: structured_config(random.Random({seed})) = {data[:300]!r}") from exc


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.binary(max_size=3000))
def test_raw_bytes_load_or_name_a_line(tmp_path_factory, data):
    check_load(tmp_path_factory.mktemp("f") / "streams.yaml", data)


@pytest.mark.slow
@pytest.mark.parametrize("name, data", attacks(), ids=[a[0] for a in attacks()])
def test_classic_attacks_are_refused_quickly_with_a_line(tmp_path, name, data):
    started = time.monotonic()
    check_load(tmp_path / "streams.yaml", data)
    assert time.monotonic() - started < 20, f"{name} took too long"


def _check_cli(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    out = subprocess.run([str(BIN / "vas-agent"), "--check", "--config", str(path)], capture_output=True,
                         text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **ENV})
    assert out.returncode in (0, 1), (out.returncode, out.stderr[-500:])
    assert "Traceback" not in out.stderr + out.stdout, out.stderr[-2000:]
    if out.returncode == 1:
        assert out.stderr.startswith(f"{path}:"), out.stderr[:300]


@pytest.mark.parametrize("name, data", attacks()[:8], ids=[a[0] for a in attacks()[:8]])
def test_vas_agent_check_on_attacks_exits_1_naming_the_file(tmp_path, name, data):
    _check_cli(tmp_path / "streams.yaml", data)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1000, 1012))
def test_vas_agent_check_never_prints_a_traceback(tmp_path, seed):
    _check_cli(tmp_path / "streams.yaml", structured_config(random.Random(seed)))


def mutations(good: str, n: int, seed: int = 5) -> list[bytes]:
    """``good`` with a few random bytes changed, inserted or cut (seeded: the same every run)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        data = bytearray(good.encode())
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            op = rng.choice(("flip", "insert", "cut"))
            if op == "flip":
                data[i] = rng.randrange(256)
            elif op == "insert":
                data[i:i] = rng.choice([b"{", b"]", b"&a ", b"*a", b"\0", b": ", b"\n  - ", b"${X}", b"\xff"])
            else:
                del data[i:i + rng.randint(1, 20)]
        out.append(bytes(data))
    return out


@pytest.mark.slow
@pytest.mark.integration
def test_a_reload_with_a_fuzzed_file_never_touches_running_streams(rtsp_camera, agent_factory):
    streams = {"cam1": {"url": rtsp_camera.url("cam1")}, "cam2": {"url": rtsp_camera.url("cam2")}}
    agent = agent_factory(config(streams), env=ENV).start()
    before = {sid: s["pid"] for sid, s in agent.wait_all("live", list(streams), timeout=60).items()}
    good = agent.config_path.read_text()
    cases = [data for _, data in attacks()][:10] + mutations(good, 10)
    refused = 0
    for i, data in enumerate(cases):
        agent.config_path.write_bytes(data)
        if i % 2:
            out = agent.vasctl("reload", timeout=60)
            assert "Traceback" not in out.stderr
            refused += out.returncode == 1
        else:
            agent.signal(signal.SIGHUP)
            time.sleep(0.3)
        assert agent.proc is not None and agent.proc.poll() is None, agent.log()[-2000:]
    agent.write_raw(good)
    wait_for(lambda: agent.vasctl("reload").returncode == 0, 30, "the good file back")
    streams_now = agent.streams()
    assert {sid: streams_now[sid]["pid"] for sid in streams} == before
    assert all(streams_now[sid]["state"] == "live" for sid in streams)
    assert refused >= 5 and "Traceback" not in agent.log()
