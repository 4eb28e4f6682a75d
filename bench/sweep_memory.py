"""Agent RSS across retention sweeps and free-space floor passes over a 23k-segment tree.

What it measures
    A real ``vas-agent`` with --streams configured streams (cheap ``tail -F`` children,
    no camera) and a recordings root on a tmpfs holding --per-stream segment files per
    stream, FFmpeg's names (``{id}_{start}_%06d.ts``, --runs runs a stream) in the
    product's layout (``{root}/{id}/``, with an ``index.m3u8``), and
    ``recordings.sweep_interval`` at its floor (10 s).  ``--grow``: the agent starts on an
    empty root and the files are written while it runs (the watcher indexes them first);
    else they are there before it starts.  ``--churn``: FFmpeg's pace throughout (a new
    segment per stream every 2 s and its live playlist; a size cap deletes the oldest);
    ``--interval 86400`` is the control (the same run with no sweep).  ``--floor``: the
    soak's free-space floor (10 % + 5 %) on a --disk tmpfs the tree fills past it, with
    --age making the oldest segments pass the floor's one-hour margin during the run, as
    the soak's did at its 60th minute.
    Printed: VmRSS before the first sweep and after each of --sweeps intervals (half an
    interval after a sweep's log line), and the step from the first sample to the last.
    Anchor: ~0, well under 1 MiB (with --churn: its control's, the churn's own warm-up).
    ``--smaps`` adds, per interval, the mappings whose resident size changed most.

How to run (as root: the recordings are a tmpfs)
    .venv/bin/python bench/sweep_memory.py                  # 20 streams x 1,150 segments, 6 sweeps
    .venv/bin/python bench/sweep_memory.py --grow --smaps   # indexed by the watcher first
    .venv/bin/python bench/sweep_memory.py --churn --sweeps 14 [--interval 86400]
    .venv/bin/python bench/sweep_memory.py --churn --floor --disk 98m --size 4096 --age 1240 \
        --interval 86400 --sweeps 14                        # the floor's onset, no sweep
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import _common as c  # noqa: E402

from tests.integration.harness import CHEAP, AgentProcess, config, wait_for  # noqa: E402
from tests.integration.segment_tree import SEGMENT, plant, rss_kib, write_segment  # noqa: E402

SWEEP = 10.0  # the configured floor of recordings.sweep_interval


def mappings(pid: int) -> dict[str, tuple[int, int, str]]:
    """Each mapping's ``start-end`` -> (size KiB, Rss KiB, name) from /proc/PID/smaps."""
    out: dict[str, tuple[int, int, str]] = {}
    key, size, name = "", 0, ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split()
                key, name = parts[0], parts[5] if len(parts) > 5 else "[anon]"
            elif line.startswith("Size:"):
                size = int(line.split()[1])
            elif line.startswith("Rss:"):
                out[key] = (size, int(line.split()[1]), name)
    return out


def grown(before: dict[str, tuple[int, int, str]], after: dict[str, tuple[int, int, str]], top: int = 4) -> str:
    """The mappings whose Rss changed most between two ``mappings`` reads (by start address:
    the heap and a growing mmap keep theirs)."""
    def by_start(maps: dict[str, tuple[int, int, str]]) -> dict[str, tuple[int, int, str]]:
        return {k.split("-")[0]: v for k, v in maps.items()}
    old, new = by_start(before), by_start(after)
    deltas = sorted(((rss - old.get(k, (0, 0, ""))[1], k, size, name) for k, (size, rss, name) in new.items()),
                    key=lambda d: -abs(d[0]))
    gone = sum(rss for k, (_, rss, _) in old.items() if k not in new)
    parts = [f"{d:+d} KiB {name} ({size} KiB map)" for d, k, size, name in deltas[:top] if d]
    return "; ".join(parts) + (f"; unmapped {gone} KiB" if gone else "")


class Churn:
    """FFmpeg's pace on every stream: a new segment every SEGMENT s, and its live playlist
    renamed into place naming the last five (the watcher learns their timing); each stream's
    ``max_size`` makes retention delete its oldest as the new ones come."""

    def __init__(self, root: Path, ids: list[str], size: int) -> None:
        self.root, self.ids, self.size = root, ids, size
        self.stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "000Z"
        self.seq = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(SEGMENT):
            now = time.time()
            for sid in self.ids:
                folder = self.root / sid
                write_segment(folder, f"{sid}_{self.stamp}_{self.seq:06d}.ts", now, self.size)
                lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2",
                         f"#EXT-X-MEDIA-SEQUENCE:{max(0, self.seq - 4)}"]
                for n in range(max(0, self.seq - 4), self.seq + 1):
                    when = datetime.fromtimestamp(now - (self.seq + 1 - n) * SEGMENT, UTC)
                    lines += [f"#EXT-X-PROGRAM-DATE-TIME:{when.isoformat(timespec='milliseconds')}",
                              f"#EXTINF:{SEGMENT:.6f},", f"{sid}_{self.stamp}_{n:06d}.ts"]
                (folder / "index.m3u8.tmp").write_text("\n".join(lines) + "\n")
                os.rename(folder / "index.m3u8.tmp", folder / "index.m3u8")
            self.seq += 1


def sweeps_logged(agent: AgentProcess) -> int:
    return agent.log().count("recordings indexed (sweep)")


def run(args: argparse.Namespace, work: Path) -> list[int]:
    """RSS (KiB) before the first sweep and after each sweep."""
    ids = [f"cam{i:02d}" for i in range(args.streams)]
    recordings = work / "recordings"
    recordings.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.disk}", "tmpfs", str(recordings)], check=True)
    cap = {"recording": {"max_size": args.per_stream * args.size}} if args.churn and not args.floor else {}
    floor = {"min_free": "10%", "min_free_hysteresis": "5%"} if args.floor else {}
    agent = AgentProcess(work, {**config({sid: {**CHEAP, **cap} for sid in ids}),
                                "recordings": {"sweep_interval": f"{args.interval:g}s", **floor}})
    churn = Churn(recordings, ids, args.size)
    try:
        if not args.grow:
            plant(recordings, ids, args.per_stream, args.runs, args.size, age=args.age)
        agent.start()
        assert agent.proc is not None
        pid = agent.proc.pid
        wait_for(lambda: "recordings indexed (start)" in agent.log(), 60, "the first index")
        if args.grow:
            plant(recordings, ids, args.per_stream, args.runs, args.size, pace=4000)
        print(f"sweeps while the tree was written: {sweeps_logged(agent)}")
        if args.churn:
            churn.thread.start()
            time.sleep(4 * SEGMENT)  # retention's first deletions
        out, maps = [], mappings(pid)
        time.sleep(2.0)  # the watcher's last events, and the snapshot they change
        out.append(rss_kib(pid))
        print(f"before the first sweep: {out[0] / 1024:.2f} MiB")
        for k in range(args.sweeps):
            done = sweeps_logged(agent)
            if args.interval <= SWEEP:
                wait_for(lambda done=done: sweeps_logged(agent) > done, SWEEP + 20, f"sweep {k + 1}")
            else:  # the control: the same time passes, no sweep runs
                time.sleep(SWEEP - SWEEP / 2)
            time.sleep(SWEEP / 2)
            out.append(rss_kib(pid))
            what = f"sweep {k + 1}" if args.interval <= SWEEP else f"{(k + 1) * SWEEP:g} s (no sweep)"
            line = f"after {what}: {out[-1] / 1024:.2f} MiB ({(out[-1] - out[0]) / 1024:+.2f})"
            if args.smaps:
                now = mappings(pid)
                line += f"  [{grown(maps, now)}]"
                maps = now
            print(line, flush=True)
        indexed = re.findall(r"recordings indexed \(sweep\): (\d+) segments", agent.log())
        print(f"segments indexed by the last sweep: {indexed[-1] if indexed else '?'}")
        return out
    finally:
        churn.stop.set()
        agent.stop()
        subprocess.run(["umount", "-l", str(recordings)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--per-stream", type=int, default=1150)
    parser.add_argument("--runs", type=int, default=3, help="FFmpeg runs (name prefixes) per stream")
    parser.add_argument("--size", type=int, default=188 * 8, help="bytes per segment file")
    parser.add_argument("--sweeps", type=int, default=6)
    parser.add_argument("--grow", action="store_true", help="write the tree after the agent started")
    parser.add_argument("--churn", action="store_true",
                        help="a new segment per stream every 2 s, the oldest deleted by a size cap")
    parser.add_argument("--interval", type=float, default=SWEEP,
                        help="recordings.sweep_interval (a day: the control, no sweep runs)")
    parser.add_argument("--disk", default="1g", help="the recordings tmpfs's size")
    parser.add_argument("--floor", action="store_true",
                        help="the soak's free-space floor (10 %% + 5 %%) instead of a size cap deletes")
    parser.add_argument("--age", type=float, default=0.0, help="age of the newest planted segment, seconds")
    parser.add_argument("--smaps", action="store_true", help="per sweep, the mappings that grew most")
    args = parser.parse_args()
    c.raise_on_sigterm()  # SIGTERM unwinds through run()'s finally: the agent stopped, the tmpfs unmounted
    with tempfile.TemporaryDirectory(prefix="vas-sweepmem-") as tmp:
        rss = run(args, Path(tmp))
    step = (rss[-1] - rss[0]) / 1024
    first = (rss[1] - rss[0]) / 1024
    print(f"step over {args.sweeps} intervals: {step:+.2f} MiB (the first {first:+.2f}, "
          f"after it {(rss[-1] - rss[1]) / 1024:+.2f}); anchor: ~0, well under 1 MiB (churn: its control's)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
