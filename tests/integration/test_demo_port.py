"""``./install.sh --demo`` with the exporter's port taken (issue 18, item 7): it stops at once and
says why, instead of running an agent whose printed `curl localhost:8080` reaches another program."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from camera.fixture import free_port

pytestmark = pytest.mark.integration
CHECKOUT = Path(__file__).resolve().parents[2]


def demo_checkout(tmp_path: Path, exporter_port: int, sfu_port: int | None = None) -> Path:
    """install.sh and config/ copied, the demos' ports (8080, the SFU's 3000) moved to these: a test
    takes its own port, never the machine's 8080, which another program (or test run) may hold."""
    shutil.copy2(CHECKOUT / "install.sh", tmp_path / "install.sh")
    shutil.copytree(CHECKOUT / "config", tmp_path / "config")
    for name in ("demo.yaml", "demo-sfu.yaml"):
        path = tmp_path / "config" / name
        text = path.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{exporter_port}")
        if sfu_port is not None:
            text = text.replace('"3000"', f'"{sfu_port}"').replace("127.0.0.1:3000", f"127.0.0.1:{sfu_port}")
        path.write_text(text)
    return tmp_path


def held_port() -> tuple[socket.socket, int]:
    """A port of 127.0.0.1 that another program listens on (as the demo's would be)."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, holder.getsockname()[1]


def test_demo_with_its_port_taken_fails_at_once_with_the_reason(tmp_path):
    holder, port = held_port()
    checkout = demo_checkout(tmp_path, port)
    started = time.monotonic()
    demo = subprocess.Popen(["bash", str(checkout / "install.sh"), "--demo"], cwd=checkout, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = demo.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGKILL)  # the demo went on: stop its agent and exporter too
        demo.communicate()
        pytest.fail(f"install.sh --demo carried on with port {port} taken")
    finally:
        holder.close()
    assert demo.returncode == 1
    assert f"the demo cannot start: port {port} on 127.0.0.1 is already in use" in err
    assert "change exporter.listen in config/demo.yaml" in err
    assert "The demo agent runs" not in out and time.monotonic() - started < 10


def test_sfu_demo_with_the_sfus_port_taken_fails_at_once_with_the_reason(tmp_path):
    """``--demo --with-sfu`` with the SFU's port (3000) taken went on: the SFU crash-looped, the
    agent's SFU probes and the printed `curl localhost:3000/producers` reached the other program."""
    holder, port = held_port()
    # The exporter's port is free (or its own, earlier, refusal would be the answer).
    checkout = demo_checkout(tmp_path, free_port(), port)
    started = time.monotonic()
    demo = subprocess.Popen(["bash", str(checkout / "install.sh"), "--demo", "--with-sfu"], cwd=checkout, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = demo.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGKILL)
        demo.communicate()
        pytest.fail(f"install.sh --demo --with-sfu carried on with port {port} taken")
    finally:
        holder.close()
    assert demo.returncode == 1, err
    assert f"the demo cannot start: port {port} on 127.0.0.1 is already in use" in err
    assert "Its SFU must listen there" in err
    assert "change mediasoup.api_url and the --port in mediasoup.command in config/demo-sfu.yaml" in err
    assert "The demo agent runs" not in out and time.monotonic() - started < 10
