"""``./install.sh --demo`` with the exporter's port taken (issue 18, item 7): it stops at once and
says why, instead of running an agent whose printed `curl localhost:8080` reaches another program."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
CHECKOUT = Path(__file__).resolve().parents[2]


def test_demo_with_its_port_taken_fails_at_once_with_the_reason():
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", 8080))
        holder.listen()
    except OSError:  # someone else holds it already: the same situation
        pass
    started = time.monotonic()
    demo = subprocess.Popen(["bash", str(CHECKOUT / "install.sh"), "--demo"], cwd=CHECKOUT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = demo.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGKILL)  # the demo went on: stop its agent and exporter too
        demo.communicate()
        pytest.fail("install.sh --demo carried on with port 8080 taken")
    finally:
        holder.close()
    assert demo.returncode == 1
    assert "the demo cannot start: port 8080 on 127.0.0.1 is already in use" in err
    assert "change exporter.listen in config/demo.yaml" in err
    assert "The demo agent runs" not in out and time.monotonic() - started < 10


def test_sfu_demo_with_the_sfus_port_taken_fails_at_once_with_the_reason():
    """``--demo --with-sfu`` with 3000 taken went on: the SFU crash-looped, the agent's SFU probes
    and the printed `curl localhost:3000/producers` reached the other program."""
    exporter = socket.socket()
    try:  # the exporter's port must be free here, or its own (earlier) refusal would be the answer
        exporter.bind(("127.0.0.1", 8080))
    except OSError:
        pytest.skip("127.0.0.1:8080 is held by another program right now")
    finally:
        exporter.close()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", 3000))
        holder.listen()
    except OSError:  # someone else holds it already: the same situation
        pass
    started = time.monotonic()
    demo = subprocess.Popen(["bash", str(CHECKOUT / "install.sh"), "--demo", "--with-sfu"], cwd=CHECKOUT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = demo.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGKILL)
        demo.communicate()
        pytest.fail("install.sh --demo --with-sfu carried on with port 3000 taken")
    finally:
        holder.close()
    assert demo.returncode == 1, err
    assert "the demo cannot start: port 3000 on 127.0.0.1 is already in use" in err
    assert "Its SFU must listen there" in err
    assert "change mediasoup.api_url and the --port in mediasoup.command in config/demo-sfu.yaml" in err
    assert "The demo agent runs" not in out and time.monotonic() - started < 10
