"""Fixtures for tests that run the real agent."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import AgentProcess

#: Lines of each agent's log shown with a failed test (what the agent said when it failed).
LOG_TAIL = 60


@pytest.fixture
def agent_factory(request, tmp_path) -> Iterator:
    """``agent_factory(config_dict, env=...)`` -> an unstarted AgentProcess; all stopped at teardown."""
    made: list[AgentProcess] = []
    request.node.stash[_AGENTS] = made

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


_AGENTS = pytest.StashKey[list[AgentProcess]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report ends with the last lines of each agent's log: a CI failure says why."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for agent in item.stash.get(_AGENTS, []):
            tail = agent.log().splitlines()[-LOG_TAIL:]
            report.sections.append((f"agent log ({agent.workdir.name}), last {len(tail)} lines", "\n".join(tail)))
