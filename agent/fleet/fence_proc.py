"""The lease fence process: stops the agent's children when the agent stops vouching for them.

Run by agent/fleet/fence.py in fleet mode, one per agent, as ``python -I -S fence_proc.py``
(standard library only), in its own session (a SIGSTOP of the agent, or of its
process group, does not freeze it) and with ``PR_SET_PDEATHSIG`` (it dies with
the agent).  The agent writes one JSON line on stdin after each check that it is
awake and entitled to run its streams::

    {"until": <CLOCK_MONOTONIC seconds>, "pgids": [<process group of each child>, ...]}

When ``until`` passes without a new line (the agent is frozen: SIGSTOP, a VM
pause, a swap storm), the fence sends SIGTERM to those process groups and
SIGKILL one second later, so a paused owner stops recording and sending RTP
before (or just as) its lease expires and another node takes its cameras.  A
group is signalled only while a pidfd opened when it was listed says its leader
has not been reaped: the agent cannot reap while frozen, so the group id cannot
have been reused.  End of stdin (the agent closed it, or died) ends the fence.
"""
from __future__ import annotations

import json
import os
import select
import signal
import sys
import time

#: Seconds between SIGTERM (FFmpeg finishes its segment) and SIGKILL.
KILL_AFTER = 1.0


def _say(text: str) -> None:
    print(f"vas-fence[{os.getpid()}]: {text}", file=sys.stderr, flush=True)


def _regroup(groups: dict[int, int], pgids: list[int]) -> None:
    """Hold a pidfd per listed group leader; drop the ones no longer listed."""
    for pgid in [g for g in groups if g not in pgids]:
        os.close(groups.pop(pgid))
    for pgid in pgids:
        if pgid not in groups:
            try:
                groups[pgid] = os.pidfd_open(pgid)
            except OSError:
                continue  # already gone


def _signal(groups: dict[int, int], sig: int) -> int:
    sent = 0
    for pgid, fd in groups.items():
        try:
            signal.pidfd_send_signal(fd, 0)  # ESRCH once reaped: the group id may be someone else's
            os.killpg(pgid, sig)
            sent += 1
        except OSError:
            continue
    return sent


def _fire(groups: dict[int, int], until: float) -> None:
    late = time.monotonic() - until
    n = _signal(groups, signal.SIGTERM)
    _say(f"the agent (pid {os.getppid()}) stopped vouching for its streams {late:.1f}s ago (frozen?): "
         f"stopped {n} process groups so that no second node records the same camera")
    time.sleep(KILL_AFTER)
    _signal(groups, signal.SIGKILL)
    for fd in groups.values():
        os.close(fd)
    groups.clear()


def main() -> None:
    """Read vouchers from stdin until it closes; fire when one lapses."""
    groups: dict[int, int] = {}
    until: float | None = None
    pending = b""
    while True:
        wait = None if until is None else max(0.0, until - time.monotonic())
        ready, _, _ = select.select([0], [], [], wait)
        if not ready:
            _fire(groups, until or 0.0)
            until = None
            continue
        data = os.read(0, 65536)
        if not data:
            return
        *lines, pending = (pending + data).split(b"\n")
        for line in lines[-1:]:  # the newest voucher replaces every earlier one
            try:
                voucher = json.loads(line)
                until, pgids = float(voucher["until"]), [int(g) for g in voucher["pgids"]]
            except (ValueError, KeyError, TypeError) as exc:  # keep the last good one rather than die
                _say(f"ignoring a voucher that is not one ({exc}): {line[:80]!r}")
                continue
            _regroup(groups, pgids)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
