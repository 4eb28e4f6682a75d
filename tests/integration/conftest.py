"""Fixtures for tests that run the real agent."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import AgentProcess


@pytest.fixture
def agent_factory(tmp_path) -> Iterator:
    """``agent_factory(config_dict, env=...)`` -> an unstarted AgentProcess; all stopped at teardown."""
    made: list[AgentProcess] = []

    def make(config: dict, env: dict[str, str] | None = None, name: str = "a") -> AgentProcess:
        workdir = tmp_path / name
        workdir.mkdir()
        agent = AgentProcess(workdir, config, env)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        try:
            agent.stop(timeout=30)
        finally:
            agent.kill()
