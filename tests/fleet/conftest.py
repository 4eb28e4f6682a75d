"""Fixtures of the fleet tests: a real etcd (one member, or three) and agents in fleet mode."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fleet.etcd import EtcdCluster
from tests.integration.conftest import agent_factory

__all__ = ["agent_factory"]


@pytest.fixture
def etcd(tmp_path) -> Iterator[EtcdCluster]:
    """One etcd member on 127.0.0.1 with two spare client ports (to cut single agents off)."""
    cluster = EtcdCluster(tmp_path / "etcd", 1, extra_client_ports=2).start()
    yield cluster
    cluster.close()


@pytest.fixture
def etcd_cluster(tmp_path) -> Iterator[EtcdCluster]:
    """Three etcd members on 127.0.0.1."""
    cluster = EtcdCluster(tmp_path / "etcd3", 3).start()
    yield cluster
    cluster.close()
