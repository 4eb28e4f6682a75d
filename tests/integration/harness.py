"""Runs the real vas-agent and vasctl as processes for integration tests."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yaml

BIN = Path(sys.executable).parent


#: Quick supervision settings so failures and restarts happen in seconds.
FAST = {
    "restart": {"initial_delay": "0.3s", "multiplier": 2, "max_delay": "2s", "jitter": 0.1, "stable_after": "60s"},
    # A first progress report needs the camera's RTSP session set up; beside five other test workers
    # that took over 4 s, and streams no test stalled were killed as stalled. Stall tests set 4 s.
    "stall_timeout": "10s",
    "stop_timeout": "3s",
    "recording": {"segment_duration": "1s"},
}

#: A cheap child: one process per stream, its recording dir in its argv, no camera, no CPU.
CHEAP = {"command": ["tail", "-F", "-s", "60", "{recording_dir}/.alive"], "ready_after": "0.5s", "stall_timeout": 0}

#: A cheap stand-in for FFmpeg: one progress report, then it idles (live, no CPU).
IDLE = ["/bin/sh", "-c", "printf 'frame=1\\nprogress=continue\\n'; exec sleep 3600", "{progress}"]

#: Exits 7 on SIGTERM: its exit status tells a graceful stop from PDEATHSIG's SIGKILL.
TRAPS_TERM = ["/bin/sh", "-c", "trap 'exit 7' TERM; printf 'frame=1\\nprogress=continue\\n'; "
              "while :; do sleep 0.2; done", "{progress}"]

#: Streams without recordings or stall detection, for stand-ins that write nothing.
NO_RECORDING = {"recording": {"enabled": False}, "stall_timeout": 0}


def config(streams: dict, **defaults) -> dict:
    """A config dict for ``streams`` with the quick defaults (overridable per call)."""
    return {"defaults": {**FAST, **defaults}, "streams": streams}


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (OSError, ValueError, KeyError) as exc:
            last_exc = exc
        time.sleep(interval)
    detail = f" (last error: {last_exc})" if last_exc else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


class AgentProcess:
    """One vas-agent run on a config written into ``workdir``."""

    def __init__(self, workdir: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.config_path = workdir / "streams.yaml"
        self.runtime_dir = workdir / "run"
        self.recordings = workdir / "recordings"
        self.log_path = workdir / "agent.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config(config)

    # -- config ---------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        config = {"version": 1, **config}
        config.setdefault("node", {}).setdefault("runtime_dir", str(self.runtime_dir))
        config["node"].setdefault("drain_period", "0s")  # tests that drain set their own
        config.setdefault("recordings", {}).setdefault("root", str(self.recordings))
        # The build machine's free space is not a test input: with the default floor (10 % free) a
        # disk filled by other work made retention delete the footage a test planted. Tests of the
        # floor set their own.
        config["recordings"].setdefault("min_free", "1MiB")
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def write_raw(self, text: str) -> None:
        self.config_path.write_text(text)

    # -- process --------------------------------------------------------------
    def start(self, extra_env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> AgentProcess:
        """Run the agent (``prefix``: a command in front, e.g. ``prlimit --nofile=...``)."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*prefix, str(BIN / "vas-agent"), "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env={**self.env, **(extra_env or {})},
            start_new_session=True)
        log.close()
        wait_for(lambda: self._running_snapshot(), 15, "the agent's first snapshot")
        return self

    def _running_snapshot(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise AssertionError(f"vas-agent exited with {self.proc.returncode}:\n{self.log()}")
        return self.proc is not None and self.snapshot()["agent"]["pid"] == self.proc.pid

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- observation ------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return json.loads((self.runtime_dir / "state.json").read_text())

    def streams(self) -> dict[str, dict[str, Any]]:
        return {s["id"]: s for s in self.snapshot()["streams"]}

    def pids(self) -> dict[str, int | None]:
        return {sid: s["pid"] for sid, s in self.streams().items()}

    def wait_state(self, sid: str, state: str, timeout: float = 30) -> dict[str, Any]:
        return wait_for(lambda: (s := self.streams().get(sid)) and s["state"] == state and s,
                        timeout, f"stream {sid} to be {state}")

    def wait_all(self, state: str, ids: list[str], timeout: float = 30) -> dict[str, dict[str, Any]]:
        def check() -> Any:
            streams = self.streams()
            return all(streams.get(i, {}).get("state") == state for i in ids) and streams
        return wait_for(check, timeout, f"streams {ids} to be {state}")

    def vasctl(self, *args: str, timeout: float = 60, by_socket: bool = False,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run vasctl finding the agent from the config, or (``by_socket``) as ExecReload does;
        in the agent's environment unless ``env`` is given."""
        where = ["--socket", str(self.runtime_dir / "agent.sock")] if by_socket else ["--config", str(self.config_path)]
        return subprocess.run([str(BIN / "vasctl"), *where, *args],
                              capture_output=True, text=True, timeout=timeout, env=self.env if env is None else env)

    def segments(self, sid: str) -> list[Path]:
        return sorted((self.recordings / sid).glob("*.ts"))


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between open and read
        return False


def children(pid: int, *, recursive: bool = False, named: str | None = None) -> list[psutil.Process]:
    """The living (not zombie) children of ``pid``, ``named`` so if given; a child that exits while
    they are listed is left out, not an error (a clip's FFmpeg, a spawn's short ffprobe)."""
    found = []
    for child in psutil.Process(pid).children(recursive=recursive):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and child.name() == (named or child.name()):  # name cached
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def is_probe(argv: list[str]) -> bool:
    """An ffprobe's command line, also while it starts behind setpriv and sh (agent/supervise/process.py)."""
    return any(os.path.basename(arg) == "ffprobe" for arg in argv)


def fill(directory: Path, name: str = "filler") -> None:
    """Write zeros into ``directory/name`` until its filesystem is full (ENOSPC)."""
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
