"""sd_notify over a real unix datagram socket."""
from __future__ import annotations

import os
import socket
import tempfile
import uuid
from pathlib import Path

import pytest

from agent.sdnotify import Notifier


@pytest.fixture
def short_dir(tmp_path):
    """tmp_path, or a shorter directory when a socket path would exceed sun_path (108 bytes)."""
    if len(str(tmp_path / "notify.sock")) < 100:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="sdn-") as d:
        yield Path(d)


def receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


def test_sends_fields_to_a_path_socket(short_dir):
    path = str(short_dir / "notify.sock")
    with receiver(path) as sock:
        notifier = Notifier(env={"NOTIFY_SOCKET": path})
        assert notifier.enabled
        notifier.notify(READY=1, STATUS="3 live, 0 in error")
        assert sock.recv(4096) == b"READY=1\nSTATUS=3 live, 0 in error"


def test_sends_to_an_abstract_socket():
    name = f"vas-test-{uuid.uuid4().hex}"
    with receiver("\0" + name) as sock:
        notifier = Notifier(env={"NOTIFY_SOCKET": "@" + name})
        notifier.notify(RELOADING=1)
        notifier.notify(READY=1, STATUS="reloaded")
        notifier.notify(WATCHDOG=1)
        assert [sock.recv(4096) for _ in range(3)] == [
            b"RELOADING=1", b"READY=1\nSTATUS=reloaded", b"WATCHDOG=1"]


def test_no_notify_socket_is_a_no_op():
    notifier = Notifier(env={})
    assert not notifier.enabled
    notifier.notify(READY=1)  # nothing to send to, nothing raised
    assert Notifier(env={"NOTIFY_SOCKET": ""}).enabled is False


def test_a_vanished_systemd_is_ignored(short_dir):
    notifier = Notifier(env={"NOTIFY_SOCKET": str(short_dir / "gone.sock")})
    assert notifier.enabled
    notifier.notify(STOPPING=1)


def test_reads_the_process_environment_by_default():
    # The test runner itself may run under systemd; only check the shape.
    notifier = Notifier()
    assert notifier.enabled == bool(os.environ.get("NOTIFY_SOCKET"))


@pytest.mark.parametrize(("env", "interval"), [
    ({"WATCHDOG_USEC": "4000000"}, 2.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
    ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
    ({"WATCHDOG_USEC": "1"}, 5e-7),
    ({"WATCHDOG_USEC": ""}, None),
    ({"WATCHDOG_USEC": "abc"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({}, None),
])
def test_watchdog_interval(env, interval):
    assert Notifier(env=env).watchdog_interval == interval
