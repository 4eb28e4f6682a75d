"""The restart-delay policy: a pure function of the attempt number and the policy.

Exponential with jitter and a cap, never giving up: a camera that is down keeps
being retried at ``max_delay`` because cameras come back.
"""
from __future__ import annotations

import math
import random

from agent.config.model import RestartPolicy


def restart_delay(policy: RestartPolicy, attempt: int, *, rand: float | None = None) -> float:
    """Seconds to wait before restart number ``attempt`` (1 = first since the last stable run).

    ``rand`` is a uniform sample in [0, 1) (drawn here when omitted) so tests can
    pin the jitter.  The jittered delay never exceeds ``max_delay``.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    r = random.random() if rand is None else rand
    base = min(policy.max_delay, policy.initial_delay * _growth(policy, attempt - 1))
    if not math.isfinite(base):  # an infinite max_delay from code that skipped validation
        base = policy.initial_delay
    jittered = base * (1.0 + policy.jitter * (2.0 * r - 1.0))
    return max(0.0, min(policy.max_delay, jittered))


def _growth(policy: RestartPolicy, steps: int) -> float:
    """``multiplier ** steps``, with ``steps`` capped where the delay has reached the cap
    anyway, so a camera down for months (huge attempt counts) can't overflow it."""
    if policy.multiplier <= 1.0 or policy.initial_delay >= policy.max_delay:
        return 1.0
    try:
        steps_to_cap = math.ceil(math.log(policy.max_delay / policy.initial_delay, policy.multiplier))
        return policy.multiplier ** min(steps, steps_to_cap)
    except (OverflowError, ValueError, ZeroDivisionError):
        # Only reachable with extreme policies (config validation refuses them): the cap it is.
        return math.inf


def next_attempt(policy: RestartPolicy, attempt: int, uptime: float) -> int:
    """The attempt number for the restart after a run that lasted ``uptime`` seconds.

    The count resets only after the process stayed up ``stable_after``.
    """
    return 1 if uptime >= policy.stable_after else attempt + 1
