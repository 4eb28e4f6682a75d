"""Resource exhaustion: thousands of idle connections to the exporter, and an agent whose
descriptor limit is far too low for its streams."""
from __future__ import annotations

import resource
import socket
import time

import pytest

from camera.fixture import free_port
from tests.integration.harness import CHEAP, config, wait_for
from tests.integration.test_exporter import Exporter, http

pytestmark = [pytest.mark.integration, pytest.mark.slow]
IDLE = 3000


def test_thousands_of_idle_connections_do_not_starve_health_checks(agent_factory, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, IDLE + 1000)), hard))
    port = free_port()
    cfg = config({"cam1": CHEAP})
    cfg["exporter"] = {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp_path / "tokens")}
    agent = agent_factory(cfg).start()
    agent.wait_state("cam1", "live", timeout=30)
    exporter = Exporter(agent, port)
    conns: list[socket.socket] = []
    try:
        for _ in range(IDLE):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            conns.append(s)
        for i in range(0, IDLE, 3):  # a third of them dribble half a request and stop
            conns[i].send(b"GET /readyz HTTP/1.1\r\nHo")
        worst = 0.0
        for _ in range(20):
            started = time.monotonic()
            assert http(port, "/readyz")[0] == 200
            assert http(port, "/livez")[0] == 200
            worst = max(worst, time.monotonic() - started)
        code, body = http(port, "/v2/metrics")
        assert code == 200 and "vas_agent_up 1.0" in body
        print(f"\n{IDLE} idle connections open: /readyz + /livez worst {worst * 1000:.1f} ms")
        assert worst < 2.0
        # The exporter drops connections that send nothing (or half a request) by itself.
        wait_for(lambda: sum(1 for s in conns[:50] if _closed_by_peer(s)) == 50, 40,
                 "idle connections closed by the exporter")
    finally:
        for s in conns:
            s.close()
        exporter.stop()
    assert "Traceback" not in exporter.log.read_text()


def _closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_too_low_a_descriptor_limit_is_said_clearly_and_recovers(agent_factory):
    """40 streams under `ulimit -n 64`: the agent warns, runs what fits, says why the rest
    cannot start, never crashes, and is whole again once a reload removes streams."""
    streams = {f"s{i:02d}": CHEAP for i in range(40)}
    agent = agent_factory(config(streams))
    agent.start(prefix=("prlimit", "--nofile=64:64"))
    log = wait_for(lambda: (text := agent.log()) and "descriptor" in text and text, 15, "a warning about descriptors")
    assert "Traceback" not in log
    time.sleep(5)
    assert agent.proc is not None and agent.proc.poll() is None
    states = agent.streams()
    live = [s for s in states.values() if s["state"] == "live"]
    failed = [s for s in states.values() if s["state"] != "live"]
    print(f"\nulimit -n 64: {len(live)} of 40 streams live")
    assert live, "nothing runs at all"
    if failed:
        assert any("descriptor" in " ".join(s.get("last_error") or []) + str(s.get("last_exit"))
                   or "Too many open files" in " ".join(s.get("last_error") or []) for s in failed), failed[0]
    code = agent.vasctl("status").returncode
    assert code in (0, 1)
    agent.write_config(config({f"s{i:02d}": CHEAP for i in range(5)}))
    assert agent.vasctl("reload").returncode == 0
    agent.wait_all("live", [f"s{i:02d}" for i in range(5)], timeout=30)
    assert "Traceback" not in agent.log()
