"""Fixtures for the console's browser tests: a real node (camera, agent, exporter) and Chromium."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .browser import Browser
from .node import ConsoleNode


@pytest.fixture(scope="module")
def console_node(tmp_path_factory) -> Iterator[ConsoleNode]:
    """One node for the module's read-only tests: cam1, cam2 and a password camera, all live."""
    node = ConsoleNode(tmp_path_factory.mktemp("console-node"))
    try:
        yield node.start()
    finally:
        node.close()


@pytest.fixture
def node_factory(tmp_path) -> Iterator[Callable[..., ConsoleNode]]:
    """``node_factory(cheap=N)``: a node of the test's own (it may stop cameras); all closed at teardown."""
    made: list[ConsoleNode] = []

    def make(**kwargs) -> ConsoleNode:
        node = ConsoleNode(tmp_path / f"node{len(made)}", **kwargs)
        node.workdir.mkdir()
        made.append(node)
        return node.start()

    yield make
    for node in made:
        node.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """A fresh headless Chromium (empty sessionStorage: no token); always quit."""
    b = Browser(tmp_path / "downloads")
    try:
        yield b
    finally:
        b.quit()
