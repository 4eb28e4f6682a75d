"""The fault suite runs the real agent like the integration tests do, with a camera that
demands a password: every fault case ends with a credential leak scan of everything it
left (logs, snapshots, playlists) and of every process still running."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from camera.fixture import lend_camera
from tests.faults.leakscan import scan, secret_forms
from tests.integration.conftest import agent_factory

__all__ = ["agent_factory"]
#: The cameras' password in the fault cases: @ : / and a %-escape, URL-encoded in the URLs.
FAULT_PASSWORD = "Fl7@t:/%25pw"


class SecureCamera:
    """A camera whose ``url()`` carries the credentials (URL-encoded) by default."""

    def __init__(self, camera: Any) -> None:
        self._camera = camera

    def __getattr__(self, name: str) -> Any:
        return getattr(self._camera, name)

    def url(self, path: str = "cam1") -> str:
        return self._camera.url(path, user="fault", password=FAULT_PASSWORD)


@pytest.fixture
def secure_camera_factory(camera_factory):
    """``camera_factory`` for cameras that require the fault password."""
    def make(paths=("cam1", "cam2", "cam3", "cam4"), **kw: Any) -> SecureCamera:
        return SecureCamera(camera_factory(paths, user="fault", password=FAULT_PASSWORD, **kw))
    return make


@pytest.fixture
def rtsp_camera(_lent_cameras) -> Iterator[SecureCamera]:
    """Here the shared camera (cam1..cam4) requires the fault password."""
    with lend_camera(_lent_cameras, user="fault", password=FAULT_PASSWORD) as cam:
        yield SecureCamera(cam)


@pytest.fixture(autouse=True)
def no_credential_leaks(tmp_path) -> Iterator[None]:
    """After the case (agents and cameras stopped): the password is nowhere but in config files."""
    yield
    hits = [h for h in scan(secret_forms(FAULT_PASSWORD), [tmp_path]) if not h.where.endswith(".yaml")]
    assert not hits, f"the camera password leaked: {hits}"
