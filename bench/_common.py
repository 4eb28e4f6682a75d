"""Shared pieces of the benchmarks: the announce FIFO, config generators for the
agent and supervisord, starting/stopping the systems under test, statistics.

Nothing here listens on the network: the agent's control socket and
supervisord's RPC socket are unix sockets inside the bench's temp directory.
"""
from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
FAKE = BENCH_DIR / "fake_ffmpeg.sh"
BIN = Path(sys.executable).parent  # the venv's bin: vas-agent, vasctl, supervisord, supervisorctl
SH = "/bin/sh"


def stream_id(i: int) -> str:
    return f"cam-{i}"


def fake_argv(sid: str, fifo: Path, period: float, gen: int = 0) -> list[str]:
    """The fake FFmpeg's argv without the agent's ``{progress}`` (which comes after PERIOD)."""
    return [SH, str(FAKE), sid, str(fifo), f"{period:g}"] + ([f"gen={gen}"] if gen else [])


# -- the announce FIFO ---------------------------------------------------------
@dataclass(frozen=True)
class Announce:
    t: float   # time.monotonic() when the bench read the line
    sid: str
    pid: int


class Announcer:
    """Reads ``"ID PID"`` lines that fake_ffmpeg.sh writes at start into a named pipe.

    The pipe is opened read-write so it never reports EOF while no child has it
    open, and non-blocking so every wait is bounded.  ``pids`` is the latest PID
    announced for each id.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path, 0o600)
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.pids: dict[str, int] = {}
        self.events: list[Announce] = []
        self._partial = b""

    def poll(self, timeout: float) -> list[Announce]:
        """Announces that arrive within ``timeout`` seconds (returns at the first batch)."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return []
        now = time.monotonic()
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        out = []
        for line in lines:
            sid, _, pid = line.decode().partition(" ")
            if pid.strip().isdigit():
                ev = Announce(now, sid, int(pid))
                self.pids[sid] = ev.pid
                self.events.append(ev)
                out.append(ev)
        return out

    def drain(self) -> list[Announce]:
        """Whatever is already waiting in the pipe."""
        got: list[Announce] = []
        while True:
            batch = self.poll(0)
            if not batch:
                return got
            got += batch

    def wait_for(self, sid: str, not_pid: int | None, deadline: float) -> Announce | None:
        """The next announce of ``sid`` with a PID other than ``not_pid``, or None at ``deadline``."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            for ev in self.poll(left):
                if ev.sid == sid and ev.pid != not_pid:
                    return ev

    def wait_all(self, ids: list[str], timeout: float, alive=lambda: True) -> bool:
        """True once every id in ``ids`` has announced itself at least once.

        Gives up early when ``alive()`` turns false (the supervisor exited).
        """
        deadline = time.monotonic() + timeout
        missing = set(ids) - set(self.pids)
        while missing and time.monotonic() < deadline and alive():
            for ev in self.poll(min(1.0, deadline - time.monotonic())):
                missing.discard(ev.sid)
        return not missing

    def close(self) -> None:
        os.close(self.fd)


# -- config files ----------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


#: The agent's restart.initial_delay in the benches.  The issue asked for 0 s, but
#: the config requires initial_delay >= 1 ms; 1 ms is the smallest that matters (asyncio's
#: epoll timeout has millisecond resolution) and is subtracted as "configured backoff".
AGENT_BACKOFF = 0.001


def streams_yaml(n: int, fifo: Path, period: float, runtime_dir: Path, rec_root: Path,
                 gens: dict[str, int] | None = None, backoff: float = AGENT_BACKOFF) -> str:
    """An agent config: ``n`` verbatim-command streams running fake_ffmpeg.sh, minimal backoff."""
    gens = gens or {}
    lines = [
        "version: 1",
        "node:",
        f"  runtime_dir: {runtime_dir}",
        "recordings:",
        f"  root: {rec_root}",
        "defaults:",
        "  stall_timeout: 0",  # disabled: the bench kills children itself
        "  stop_timeout: 2s",
        # jitter 0 and stable_after 0s: every restart waits exactly initial_delay.
        f"  restart: {{initial_delay: {backoff * 1000:g}ms, jitter: 0, multiplier: 2, max_delay: 1s,"
        " stable_after: 0s}",
        "  recording: {enabled: false}",
        "streams:",
    ]
    for i in range(n):
        sid = stream_id(i)
        argv = fake_argv(sid, fifo, period, gens.get(sid, 0))
        argv.insert(5, "{progress}")  # right after PERIOD; the script ignores it
        lines.append(f"  {sid}:")
        lines.append("    command: [" + ", ".join(f'"{a}"' for a in argv) + "]")
    return "\n".join(lines) + "\n"


def supervisord_conf(n: int, fifo: Path, period: float, tmp: Path,
                     gens: dict[str, int] | None = None) -> str:
    """A supervisord config with ``n`` programs running fake_ffmpeg.sh.

    autorestart=true, startsecs=0, startretries=1000, stopasgroup/killasgroup.
    stdout/stderr_logfile=NONE: supervisord still reads (and drops) the child's
    pipes, as the agent reads and parses them, but neither writes a log file
    per report.  RPC only on a unix socket.
    """
    gens = gens or {}
    out = [
        "[unix_http_server]", f"file={tmp}/supervisor.sock", "chmod=0700", "",
        "[supervisord]", f"logfile={tmp}/supervisord.log", f"pidfile={tmp}/supervisord.pid",
        f"childlogdir={tmp}", "nodaemon=true", "minfds=8192", "minprocs=200", "loglevel=info", "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
        "[supervisorctl]", f"serverurl=unix://{tmp}/supervisor.sock", "",
    ]
    for i in range(n):
        sid = stream_id(i)
        argv = fake_argv(sid, fifo, period, gens.get(sid, 0))
        argv.insert(5, "pipe:1")  # same argv as the agent's children after placeholder expansion
        out += [f"[program:{sid}]", "command=" + " ".join(argv), "autostart=true", "autorestart=true",
                "startsecs=0", "startretries=1000", "stopasgroup=true", "killasgroup=true",
                "stopwaitsecs=2", "stdout_logfile=NONE", "stderr_logfile=NONE", ""]
    return "\n".join(out)


# -- processes ---------------------------------------------------------------------
def spawn(argv: list[str], log: Path, **kw) -> subprocess.Popen:
    """Start a system under test in its own session (Ctrl-C reaches only the bench)."""
    with open(log, "ab") as fh:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, **kw)


def stop(proc: subprocess.Popen | None, timeout: float = 30.0) -> None:
    """SIGTERM, wait ``timeout``, then SIGKILL its process group."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def sweep(marker: Path) -> int:
    """SIGKILL every process whose argv contains ``marker`` (a path unique to this run).

    The last line of cleanup: supervisord's and the floor's children have no
    parent-death signal.  Returns how many were killed.
    """
    killed = 0
    needle = str(marker)
    for p in psutil.process_iter(["cmdline"]):
        try:
            if needle in (p.info["cmdline"] or []):
                pgid = os.getpgid(p.pid)
                if pgid == p.pid:
                    os.killpg(pgid, signal.SIGKILL)
                else:
                    os.kill(p.pid, signal.SIGKILL)
                killed += 1
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass
    return killed


def is_ours(pid: int, marker: Path) -> bool:
    """True if ``pid`` still runs a fake child of this run (guards against PID reuse)."""
    try:
        return str(marker) in psutil.Process(pid).cmdline()
    except psutil.Error:
        return False


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def cpu_ns(pid: int) -> int:
    """CPU time of all of ``pid``'s threads in ns, from /proc/PID/task/*/schedstat.

    Finer than psutil's clock ticks (10 ms), which matters for one reload.
    A thread that exits between two readings drops out of the sum.
    """
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def wait_snapshot(snapshot_path: Path, pred, timeout: float, interval: float = 0.05):
    """Poll the agent's snapshot until ``pred(data)`` is true; the data, or None on timeout."""
    from agent import snapshot
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data, _ = snapshot.read(snapshot_path)
            if pred(data):
                return data
        except snapshot.SnapshotUnavailable:
            pass
        time.sleep(interval)
    return None


def all_live(n: int):
    def pred(data) -> bool:
        streams = data.get("streams", [])
        return len(streams) == n and all(s.get("pid") and s.get("state") == "live" for s in streams)
    return pred


def supervisorctl(conf: Path, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "supervisorctl"), "-c", str(conf), *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def supervisor_pids(conf: Path) -> dict[str, int | None]:
    """Program name -> PID (None unless RUNNING), from ``supervisorctl status``."""
    res = supervisorctl(conf, "status")
    out: dict[str, int | None] = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "RUNNING" and parts[2] == "pid":
            out[parts[0]] = int(parts[3].rstrip(","))
        elif parts:
            out[parts[0]] = None
    return out


# -- statistics and output -------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def calibrate() -> float:
    """Milliseconds a fixed pure-Python workload takes here now (median of 5).

    Printed at the start and end of a run: on a shared VM the CPU's speed can
    change by 2x between runs, and every figure above scales with it.
    """
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i & 7
        times.append((time.perf_counter() - t0) * 1000)
    return sorted(times)[2]


def machine_line(when: str = "start") -> str:
    load = os.getloadavg()
    return (f"host: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at {when}; CPU calibration "
            f"(1M-iteration Python loop) {calibrate():.0f} ms")


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class Interrupted(Exception):
    """SIGTERM to the bench: unwind through the finally blocks like Ctrl-C does."""


def raise_on_sigterm() -> None:
    def handler(signum, frame):
        raise Interrupted(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def bench_tempdir(prefix: str, *, keep: bool) -> Iterator[Path]:
    """One run's temp directory; on the way out, kill any child still tied to it and remove it."""
    raise_on_sigterm()
    base = Path(tempfile.mkdtemp(prefix=prefix))
    print(machine_line())
    print(f"temp dir: {base}")
    try:
        yield base
    finally:
        leftovers = sum(sweep(base / d / "announce.fifo") for d in os.listdir(base)) if base.exists() else 0
        if leftovers:
            print(f"warning: killed {leftovers} leftover children", file=sys.stderr)
        if keep:
            print(f"kept {base}")
        else:
            rmtree(base)


def teardown(popen: subprocess.Popen, fifo: Path, ann: Announcer, *, timeout: float) -> None:
    """Stop a system under test, kill any child still tied to its FIFO, close the FIFO."""
    try:
        stop(popen, timeout=timeout)
    finally:
        sweep(fifo)
        ann.close()


def write_segment(path: Path, mtime: float) -> None:
    """A 16-byte stand-in segment with the given mtime (index and retention benches)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"0123456789abcdef")
    os.utime(fd, (mtime, mtime))
    os.close(fd)


def drop_caches() -> bool:
    """Empty the page cache (root only); False when it cannot (the figures are then warm)."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def walk(root: Path) -> tuple[int, float]:
    """The floor of a first index: os.walk + lstat of every file; (files, seconds)."""
    t, n = time.monotonic(), 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            os.lstat(os.path.join(dirpath, name))
            n += 1
    return n, time.monotonic() - t
