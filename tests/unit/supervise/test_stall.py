"""The stall timer's decision, a pure function (issue 16, item 16)."""
from __future__ import annotations

from agent.supervise.stall import PAUSE_GAP, SETTLE, stall_verdict


def test_recent_progress_waits_for_its_deadline():
    assert stall_verdict(now=12.0, due=12.0, last=10.0, timeout=4, settled=False) == ("wait", 14.0)


def test_a_passed_deadline_first_reads_pending_output_then_kills():
    assert stall_verdict(now=14.0, due=14.0, last=10.0, timeout=4, settled=False) == ("settle", 14.0 + SETTLE)
    assert stall_verdict(now=14.5, due=14.5, last=10.0, timeout=4, settled=True) == ("kill", 14.5)


def test_a_timer_run_late_means_the_agent_was_paused_and_rearms_in_full():
    # SIGSTOP of the agent for 20 s across the deadline: its children were not judged meanwhile.
    assert stall_verdict(now=34.0, due=14.0, last=10.0, timeout=4, settled=False) == ("rearm", 38.0)
    assert stall_verdict(now=14.0 + PAUSE_GAP + 0.01, due=14.0, last=10.0, timeout=4, settled=True)[0] == "rearm"


def test_ordinary_loop_jitter_is_not_a_pause():
    assert stall_verdict(now=14.2, due=14.0, last=10.0, timeout=4, settled=True) == ("kill", 14.2)
