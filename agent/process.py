"""One child process: spawned in its own session, stopped TERM -> KILL, never
signalled after it was reaped.

Children get ``PR_SET_PDEATHSIG`` (through ``setpriv``, or a ``preexec_fn``
where util-linux is missing) so they die with the agent even when it is
SIGKILLed.  Signals go to the process group only while a pidfd proves the
leader has not been reaped (its PID, and so the group id, cannot be reused).
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
#: util-linux's setpriv sets PR_SET_PDEATHSIG and execs the command.  Prefixing
#: it lets Python spawn with vfork; a ``preexec_fn`` forces a full fork of the
#: agent (5-10 ms at 200 streams instead of ~2 ms).
SETPRIV = shutil.which("setpriv")
#: Variables that belong to the agent's own supervisor, not to its children.
_PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


_watched_loop: asyncio.AbstractEventLoop | None = None


def _ensure_child_watcher() -> None:
    """Reap children through pidfds inside the running loop (3.12+ does this by default).

    Python 3.11 otherwise starts one waiter thread per child, which costs a
    thread per stream and reaps outside the loop.
    """
    global _watched_loop
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    loop = asyncio.get_running_loop()
    if _watched_loop is not loop:
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(loop)
        asyncio.set_child_watcher(watcher)
        _watched_loop = loop


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The agent's environment minus what only the agent may use (sd_notify etc.)."""
    source = os.environ if env is None else env
    return {k: v for k, v in source.items() if k not in _PRIVATE_ENV}


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the forked child, before exec
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the agent died before prctl took effect
            os._exit(1)
    return preexec


class _Pipes(asyncio.SubprocessProtocol):
    """Routes stdout bytes and complete stderr lines to callbacks; notes the exit."""

    def __init__(self, on_stdout: Callable[[bytes], None], on_stderr: Callable[[str], None]) -> None:
        self.on_stdout, self.on_stderr = on_stdout, on_stderr
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()  # exited and pipes at EOF
        self._err = b""

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self.on_stdout(data)
            return
        lines = (self._err + data).split(b"\n")
        self._err = lines.pop()[-4096:]  # bound a runaway line without newline
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self.on_stderr(text)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class Child:
    """A running child.  Create with :meth:`spawn`; ``wait()`` returns its exit status."""

    def __init__(self, transport: asyncio.SubprocessTransport, pipes: _Pipes, pidfd: int | None) -> None:
        self._transport, self._pipes, self._pidfd = transport, pipes, pidfd
        self.pid: int = transport.get_pid()
        self.started_at = time.monotonic()
        self.wall_started_at = time.time()
        self._termed = False

    @classmethod
    async def spawn(cls, argv: Sequence[str], *, on_stdout: Callable[[bytes], None],
                    on_stderr: Callable[[str], None], env: Mapping[str, str] | None = None) -> "Child":
        """Start ``argv`` in a new session; raises ``OSError`` if it cannot be executed."""
        _ensure_child_watcher()
        loop = asyncio.get_running_loop()
        if SETPRIV:
            argv, preexec = [SETPRIV, "--pdeathsig", "KILL", "--", *argv], None
        else:
            preexec = _die_with_parent(os.getpid())
        transport, pipes = await loop.subprocess_exec(
            lambda: _Pipes(on_stdout, on_stderr), *argv,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=child_env(env), start_new_session=True,
            preexec_fn=preexec)
        try:
            pidfd = os.pidfd_open(transport.get_pid())
        except OSError:  # already reaped (exec failed fast) or no pidfd support
            pidfd = None
        return cls(transport, pipes, pidfd)

    @property
    def returncode(self) -> int | None:
        """Exit status once reaped: negative for a signal, as in :mod:`subprocess`."""
        return self._transport.get_returncode()

    async def wait(self) -> int:
        """Wait for the exit and release the child's resources."""
        await asyncio.shield(self._pipes.exited)
        try:
            # Let the last stderr lines arrive; a grandchild holding the pipe can't stall us.
            await asyncio.wait_for(asyncio.shield(self._pipes.closed), 0.5)
        except asyncio.TimeoutError:
            pass
        self._close()
        return self.returncode if self.returncode is not None else -1

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the child's process group if its leader is not reaped yet."""
        if self.returncode is not None or self._pidfd is None:
            return False
        try:
            signal.pidfd_send_signal(self._pidfd, 0)  # ESRCH once reaped: PID may be reused
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    async def stop(self, timeout: float) -> int:
        """SIGTERM the group once, SIGKILL it after ``timeout``; return the exit status."""
        if not self._termed:
            # Only once: a second SIGTERM makes FFmpeg quit without finishing its output.
            self._termed = True
            self.signal_group(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.wait(), timeout)
        except asyncio.TimeoutError:
            self.signal_group(signal.SIGKILL)
            return await self.wait()

    def kill(self) -> None:
        """SIGKILL the whole group now (a hung child cannot be asked nicely)."""
        self.signal_group(signal.SIGKILL)

    def _close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._transport.close()


def describe_exit(returncode: int) -> str:
    """Supervisor-style wording: ``exit status 1`` or ``terminated by SIGKILL``."""
    if returncode < 0:
        try:
            return f"terminated by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"terminated by signal {-returncode}"
    return f"exit status {returncode}"
