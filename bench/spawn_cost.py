"""What the die-with-the-agent wrapper adds to one spawn (issue 21 item 4's respawn overhead).

Times Popen -> the child's first byte on a pipe, p50 / p90 over --rounds spawns, for
    direct       ``sh -c 'echo x'`` (the floor: vfork + one exec)
    setpriv      ``setpriv --pdeathsig KILL -- sh -c 'echo x'``
    agent        the agent's own prefix (agent.process.dying_with_agent: setpriv, then a
                 shell that checks the parent after the prctl)

How to run
    .venv/bin/python bench/spawn_cost.py --rounds 200
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from agent.supervise.process import SETPRIV, dying_with_agent  # noqa: E402

CMD = ["/bin/sh", "-c", "echo x"]


def first_byte_ms(argv: list[str]) -> float:
    """Milliseconds from Popen to the child's first byte; the child is reaped after."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    assert proc.stdout is not None
    proc.stdout.read(1)
    spent = (time.perf_counter() - t0) * 1000
    proc.wait()
    proc.stdout.close()
    return spent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=200)
    args = p.parse_args()
    variants = {"direct": CMD, "agent": dying_with_agent(CMD)[0]}
    if SETPRIV:
        variants["setpriv"] = [SETPRIV, "--pdeathsig", "KILL", "--", *CMD]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):  # interleaved: load changes hit every variant alike
        for name, argv in variants.items():
            times[name].append(first_byte_ms(argv))
    for name, ts in times.items():
        ts.sort()
        print(f"{name:<8} p50 {ts[len(ts) // 2]:.2f} ms  p90 {ts[len(ts) * 9 // 10]:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
