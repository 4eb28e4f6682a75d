"""Orphaned processes of an earlier agent, found from its snapshot at start."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("content", [
    '[1, 2]', '{"streams": 5}', '{"streams": [7, {"pid": "x"}, {"pid": 1, "pid_started_at": 0}]}'])
def test_a_damaged_snapshot_does_not_stop_the_agent_from_starting(tmp_path, content):
    from agent.supervise.orphans import kill_orphans
    path = tmp_path / "state.json"
    path.write_text(content)
    assert kill_orphans(path) == []
