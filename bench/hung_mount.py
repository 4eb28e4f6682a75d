"""What an agent holds while recording folders, or the whole root, stay on a hung mount.

A real FUSE mount no server answers (tests/faults/hungfs.py, in a private mount namespace)
is put over the folders of ``--what`` (``one``, ``two`` of three, or the ``root``) once
retention has indexed them; the agent's threads (``/proc/PID/status``) and descriptors
(``/proc/PID/fd``), the snapshot's age and retention's ``problem`` are printed every 15 s for
``--seconds``, then ``vasctl status`` and ``vasctl cleanup --dry-run`` are timed.  Anchor: the
figures at the first sample (flat is the target: a stuck call holds one thread, not one per
check).  Needs root, /dev/fuse and unshare.

Usage: ``python bench/hung_mount.py [--what root|one|two] [--seconds 180]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))  # as pytest's rootdir does (camera)

from tests.faults.test_hung_mount import TRAPS_TERM, HungAgent, config, wait_for  # noqa: E402

IDS = ["a", "b", "c"]


def in_fuse(pid: int) -> int:
    """The process's threads waiting for a FUSE answer now (the kernel's wait channel)."""
    count = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            count += "fuse" in (task / "wchan").read_text() or "request_wait_answer" in (task / "wchan").read_text()
        except OSError:
            pass  # the thread left meanwhile
    return count


def sample(agent: HungAgent) -> tuple[int, int, float, str | None]:
    """Threads, descriptors, the snapshot's age and retention's problem now."""
    status = Path(f"/proc/{agent.pid}/status").read_text()
    threads = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))
    fds = len(os.listdir(f"/proc/{agent.pid}/fd"))
    age = time.time() - (agent.runtime_dir / "state.json").stat().st_mtime
    return threads, fds, age, agent.snapshot()["recordings"]["problem"]


def run(work: Path, what: str, seconds: float) -> None:
    """One agent, three streams; the hang put over ``what``; samples every 15 s (bounded)."""
    rec = work / "recordings"
    for sid in IDS:
        (rec / sid).mkdir(parents=True, exist_ok=True)
        (rec / sid / "x.ts").write_bytes(b"x" * 100)
    streams = {sid: {"command": TRAPS_TERM, "stall_timeout": 0, "recording": {"retention": "1d"}} for sid in IDS}
    agent = HungAgent(work, config(streams), [])
    try:
        agent.launch()
        wait_for(lambda: all(agent.streams()[s]["recording"]["segment_count"] == 1 for s in IDS), 15, "the index")
        for target in {"root": [rec], "one": [rec / "a"], "two": [rec / "a", rec / "b"]}[what]:
            agent.mount(target)
        started = time.monotonic()
        first = None
        while time.monotonic() - started < seconds:
            threads, fds, age, problem = sample(agent)
            first = first or (threads, fds)
            print(f"t={time.monotonic() - started:5.0f}s threads={threads} (in FUSE {in_fuse(agent.pid)}) fds={fds} "
                  f"snapshot_age={age:.1f}s "
                  f"problem={(problem or '')[:90]!r}", flush=True)
            time.sleep(15)
        threads, fds, _, _ = sample(agent)
        print(f"threads {first[0] if first else '?'} -> {threads}, fds {first[1] if first else '?'} -> {fds} "
              f"over {seconds:g}s with {what} hung (target: flat)")
        for args in (("status",), ("cleanup", "--dry-run")):
            t = time.monotonic()
            out = agent.vasctl(*args, by_socket=True, timeout=60)
            said = [line for line in (out.stdout + out.stderr).splitlines() if "RETENTION" in line or "vasctl:" in line]
            print(f"vasctl {' '.join(args)}: exit {out.returncode} in {time.monotonic() - t:.1f}s {said[:1]}")
    finally:
        agent.close()


def main() -> int:
    """Parse the options and run once."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--what", choices=("root", "one", "two"), default="two")
    parser.add_argument("--seconds", type=float, default=180.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vas-hung-bench-") as work:
        run(Path(work), args.what, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
