"""Shared pytest fixtures.

Real-camera fixtures: ``rtsp_camera`` / ``camera_factory`` run tests/camera/rtsp_camera.py
(GStreamer RTSP server) under /usr/bin/python3; ``ffmpeg_bin`` locates ffmpeg.
"""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:  # make `camera` importable under any --import-mode
    sys.path.insert(0, _TESTS_DIR)

from camera.fixture import BLOCKS, SUITE_FPS, LentCamera, RtspCamera, free_port, lend_camera  # noqa: E402
from sfu.real_sfu import SharedSfu  # noqa: E402

__all__ = ["RtspCamera", "free_port"]


@pytest.fixture
def camera_factory():
    """Start extra cameras: ``camera_factory(paths=("cam1",), port=None, user=None,
    password=None, fps=SUITE_FPS, size="320x240", profile=None, start=True) -> RtspCamera``
    (``profile="high"``: a High-profile H.264 camera).

    Every camera created through the factory is stopped at teardown.
    """
    cameras: list[RtspCamera] = []

    def make(paths=("cam1",), port=None, *, user=None, password=None,
             fps=SUITE_FPS, size="320x240", profile=None, start=True) -> RtspCamera:
        if isinstance(paths, str):
            paths = (paths,)
        cam = RtspCamera(paths, port, user=user, password=password, fps=fps, size=size,
                         profile=profile)
        cameras.append(cam)
        if start:
            cam.start()
        return cam

    yield make
    errors = []
    for cam in reversed(cameras):
        try:
            cam.close()
        except Exception as exc:  # keep stopping the others
            errors.append(f"{cam!r}: {exc!r}")
    if errors:
        pytest.fail("failed to stop cameras: " + "; ".join(errors))


@pytest.fixture(scope="session")
def _lent_cameras() -> Iterator[dict[tuple[str | None, str | None], LentCamera]]:
    cameras: dict[tuple[str | None, str | None], LentCamera] = {}
    yield cameras
    for cam in cameras.values():
        cam.close()


@pytest.fixture
def rtsp_camera(_lent_cameras) -> Iterator[RtspCamera]:
    """A started RtspCamera serving cam1..cam4 on a free port of 127.0.0.1 (see ``lend_camera``)."""
    with lend_camera(_lent_cameras) as cam:
        yield cam


@pytest.fixture(scope="module")
def _module_sfu(tmp_path_factory) -> Iterator[SharedSfu]:
    sfu = SharedSfu(tmp_path_factory.mktemp("sfu"))
    yield sfu
    sfu.stop()


@pytest.fixture
def real_sfu(_module_sfu: SharedSfu) -> SharedSfu:
    """The reference SFU on real mediasoup (sfu/server.js), run on its own (not by an
    agent) and shared by a module's tests that do not kill it; emptied before each test."""
    _module_sfu.reset()
    return _module_sfu


@pytest.fixture(scope="session")
def host_vas_account() -> None:
    """User and group vas on this host, as install.sh creates them, made before any test that needs
    them runs and left in place (as install.sh leaves them).  The account database is one for the
    machine: tests in other workers make the same account at the same moment, and an "already
    exists" (exit 9) is their success, not an error; none of them deletes it while another runs.
    Creating the account on a host without one is tests/integration/test_install_host.py's case
    (in a copy of /etc)."""
    import grp
    import pwd
    import subprocess
    for exists, cmd in ((lambda: grp.getgrnam("vas"), ["groupadd", "--system", "vas"]),
                        (lambda: pwd.getpwnam("vas"), ["useradd", "--system", "--gid", "vas", "--home-dir",
                                                         "/var/lib/vas", "--no-create-home", "--shell",
                                                         "/usr/sbin/nologin", "vas"])):
        try:
            exists()
        except KeyError:
            made = subprocess.run(cmd, capture_output=True, text=True)
            if made.returncode not in (0, 9):  # 9: made by another worker just now
                pytest.fail(f"{' '.join(cmd)}: {made.stderr.strip()}", pytrace=False)


@pytest.fixture(scope="session")
def ffmpeg_bin() -> str:
    """Absolute path of ffmpeg; fails (not skips) when it is missing."""
    path = shutil.which("ffmpeg")
    if path is None:
        pytest.fail("ffmpeg not found on PATH: integration tests need a real ffmpeg "
                    "(apt-get install ffmpeg)", pytrace=False)
    return path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject's addopts): six workers per core.  Most tests wait on real
    processes (a camera's frames, a stall timeout, a restart's backoff), not on the CPU: with
    four, a 2-core run's middle five minutes left half the CPU idle (runs V, W: 6:42, 6:46;
    six: 5:46, run X).  At most one per port block but two: more would share a block's ports."""
    return min(6 * len(os.sched_getaffinity(0)), BLOCKS - 2)  # the cores this process may use


def pytest_collection_modifyitems(config, items) -> None:
    """In a pytest-xdist worker: the tests that declare minutes of work (a longer timeout) first,
    then the other slow tests, then the heavy ones with the other integration tests, then the
    rest, so the longest waits start at once and the many short tests fill the gaps at the end
    (a long test handed out last would run alone).  Stable: a module's tests stay in order."""
    if hasattr(config, "workerinput"):
        items.sort(key=_dispatch_order)


def _dispatch_order(item) -> int:
    timeout = item.get_closest_marker("timeout")
    if timeout is not None and timeout.args and timeout.args[0] > 120:
        return 0
    if item.get_closest_marker("heavy"):  # its own load would slow the long tests beside it
        return 2
    if item.get_closest_marker("slow"):
        return 1
    return 2 if item.get_closest_marker("integration") else 3
