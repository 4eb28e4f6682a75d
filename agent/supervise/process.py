"""One child process: spawned in its own session, stopped TERM -> KILL, never
signalled after it was reaped.

The child is a plain :class:`subprocess.Popen`; the event loop watches its
pidfd (readable once it exits) and its stderr pipe directly, with no asyncio
transport layers.  Its stdout (the progress reports) is read in batches shared
by all children, one loop wakeup per COALESCE (see there).  Reaping goes
through ``Popen.wait`` only after the pidfd said the child exited.

Children get ``PR_SET_PDEATHSIG`` (through util-linux's ``setpriv``, or a
``preexec_fn`` where it is missing) so they die with the agent even when it is
SIGKILLed.  Signals go to the process group only while the pidfd proves the
leader has not been reaped (its PID, and so the group id, cannot be reused).
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import select
import shutil
import signal
import subprocess
import time
import weakref
from collections.abc import Callable, Mapping, Sequence

from agent.supervise import limits

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
#: util-linux's setpriv sets PR_SET_PDEATHSIG and execs the command.  Prefixing
#: it lets Python spawn with vfork; a ``preexec_fn`` forces a full fork of the
#: agent (5-10 ms at 200 streams instead of ~2 ms).
SETPRIV = shutil.which("setpriv")
#: Variables that belong to the agent's own supervisor, not to its children.
_PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
#: After the exit, how long to wait for the pipes' last bytes (a grandchild may hold them).
DRAIN_TIMEOUT = 0.5
_READ_SIZE = 65536
#: Progress pipes are read in batches: the first report wakes the loop, and every report that
#: arrives within COALESCE is read in that same wakeup.  A wakeup of the loop costs more than
#: parsing a report (bench/progress.py: 200 cameras at 1 s, 0.05 s -> ~50 us a report, 0.2 s
#: -> ~22 us).  A run's first output is read at once (live is not delayed); later reports reach
#: the stall watch at most COALESCE late, well inside its SETTLE (0.5 s) before a verdict.
COALESCE = 0.2
#: Reads of each pipe right after its child exited, before the batch takes over (a grandchild
#: writing without end must not hold the loop).
_EXIT_READS = 16
#: A batch read that fills the buffer found the pipe full: its child is blocked writing, and a
#: batch a COALESCE would cap it at 64 KiB per 0.2 s (FFmpeg, an SFU app logging to stdout,
#: stuck in write()).  Such a pipe is read at once until it sends less than this per COALESCE.
_FLOOD_BYTES = _READ_SIZE // 2


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The agent's environment minus what only the agent may use (sd_notify etc.)."""
    source = os.environ if env is None else env
    return {k: v for k, v in source.items() if k not in _PRIVATE_ENV}


#: Runs between setpriv and the command: exits unless its parent is still the agent ($0).
#: setpriv sets PR_SET_PDEATHSIG but never checks the parent afterwards, so an agent
#: SIGKILLed between the spawn and setpriv's prctl left a child that never got the signal:
#: an FFmpeg nobody owned, beside the next agent's (seen in a fault test under load).
#: Checked after the prctl, the parent is either still the agent (and its death will kill
#: us) or already gone.  125: not run.
_PARENT_CHECK = '[ "$PPID" = "$0" ] || exit 125; exec "$@"'
_SH = shutil.which("sh") or "/bin/sh"


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the forked child, before exec
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the agent died before prctl took effect
            os._exit(1)
    return preexec


def dying_with_agent(argv: Sequence[str]) -> tuple[list[str], Callable[[], None] | None]:
    """``argv`` made to die with this process (PR_SET_PDEATHSIG), and the ``preexec_fn`` if any.

    With setpriv (vfork-fast): ``setpriv --pdeathsig KILL -- sh -c CHECK PID argv...``, the
    shell checking the parent after the prctl.  Without it: a ``preexec_fn`` doing both.
    """
    if SETPRIV:
        return [SETPRIV, "--pdeathsig", "KILL", "--", _SH, "-c", _PARENT_CHECK, str(os.getpid()), *argv], None
    return list(argv), _die_with_parent(os.getpid())


class _LineSplitter:
    """Complete lines of a byte stream, with a bound on a line that never ends."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit, self._partial = emit, b""

    def feed(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-4096:]
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._emit(text)


class _Batch:
    """One epoll set per event loop holding the children's stdout pipes (see COALESCE).

    Holds no reference to the loop, so a closed loop and its batch go away together.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, Callable[[int], object]] = {}
        loop.add_reader(self._epoll.fileno(), self._wake)

    def add(self, fd: int, read: Callable[[int], object]) -> None:
        """Call ``read(fd)`` (in a batch) while ``fd`` is readable, until :meth:`remove`."""
        self._epoll.register(fd, select.EPOLLIN)
        self._readers[fd] = read

    def remove(self, fd: int) -> None:
        """Stop watching ``fd``; call before closing it."""
        if self._readers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def _wake(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._epoll.fileno())  # until the batch is read: no wakeup per report
        loop.call_later(COALESCE, self._drain)

    def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for fd, _ in self._epoll.poll(0):
                read = self._readers.get(fd)  # an earlier callback of this batch may have removed it
                if read is None:
                    continue
                try:
                    read(fd)
                except Exception as exc:  # one stream's bug must not starve the others
                    loop.call_exception_handler({"message": "progress reader failed", "exception": exc})
        finally:
            loop.add_reader(self._epoll.fileno(), self._wake)


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batch] = weakref.WeakKeyDictionary()


def _batch(loop: asyncio.AbstractEventLoop) -> _Batch:
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = _Batch(loop)
    return batch


class Child:
    """A running child.  Create with :meth:`spawn`; ``wait()`` returns its exit status."""

    def __init__(self, proc: subprocess.Popen[bytes], pidfd: int,
                 on_stdout: Callable[[bytes], None], on_stderr: Callable[[str], None]) -> None:
        self._proc, self._pidfd = proc, pidfd
        limits.children += 1
        self.pid: int = proc.pid
        self.started_at = time.monotonic()
        self.wall_started_at = time.time()
        self._termed = False
        self._loop = asyncio.get_running_loop()
        #: Set once reaped.  An Event, not a shielded future: a waiter is woken in one turn of the
        #: loop instead of two, and cancelling a waiter (stop()'s timeout) cancels only its own wait.
        self._exited = asyncio.Event()
        self._drained: asyncio.Future[None] = self._loop.create_future()
        assert proc.stdout is not None and proc.stderr is not None
        self._stdout = proc.stdout.fileno()
        self._batch: _Batch | None = None  # set once stdout moved to the batch (after its first bytes)
        self._flood: list[float] | None = None  # read at once (flooding): [window start, bytes in it]
        self._open = {self._stdout: on_stdout, proc.stderr.fileno(): _LineSplitter(on_stderr).feed}
        for fd in self._open:
            os.set_blocking(fd, False)
        self._loop.add_reader(self._stdout, self._read_first)
        self._loop.add_reader(proc.stderr.fileno(), self._read, proc.stderr.fileno())  # rare: at once
        self._loop.add_reader(pidfd, self._on_exit)

    @classmethod
    async def spawn(cls, argv: Sequence[str], *, on_stdout: Callable[[bytes], None],
                    on_stderr: Callable[[str], None], env: Mapping[str, str] | None = None,
                    cwd: str | os.PathLike[str] | None = None) -> Child:
        """Start ``argv`` in a new session; raises ``OSError`` if it cannot be executed."""
        argv, preexec = dying_with_agent(argv)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=child_env(env), start_new_session=True,
                                preexec_fn=preexec, cwd=cwd)
        # Not reaped before this: only Popen.wait reaps, and only after the pidfd fires.
        return cls(proc, os.pidfd_open(proc.pid), on_stdout, on_stderr)

    @property
    def returncode(self) -> int | None:
        """Exit status once reaped: negative for a signal, as in :mod:`subprocess`."""
        return self._proc.returncode

    async def exited_within(self, seconds: float) -> bool:
        """True once the child exited, False after ``seconds`` without an exit.  A periodic check
        (the SFU's health loop) leaves nothing behind: ``shield(wait())`` made a task per check that
        lived as long as the child, 2.6 MiB/h of them in a 20-stream soak."""
        try:
            async with asyncio.timeout(seconds):
                await self._exited.wait()
        except TimeoutError:
            return False
        return True

    async def wait(self) -> int:
        """Wait for the exit (and the pipes' last bytes); return the exit status."""
        await self._exited.wait()
        if not self._drained.done():  # usually it is: the exit's reads met EOF on both pipes
            try:
                await asyncio.wait_for(asyncio.shield(self._drained), DRAIN_TIMEOUT)
            except TimeoutError:
                for fd in list(self._open):
                    self._close_pipe(fd)
        return self._proc.returncode if self._proc.returncode is not None else -1

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the child's process group if its leader is not reaped yet."""
        if self._proc.returncode is not None:
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
        except TimeoutError:
            self.signal_group(signal.SIGKILL)
            return await self.wait()

    def kill(self) -> None:
        """SIGKILL the whole group now (a hung child cannot be asked nicely)."""
        self.signal_group(signal.SIGKILL)

    # -- event loop callbacks ----------------------------------------------------
    def _read_first(self) -> None:
        """The run's first output, read at once; from then on stdout is read in batches."""
        if self._read(self._stdout) and self._stdout in self._open:
            self._loop.remove_reader(self._stdout)
            self._batch = _batch(self._loop)
            self._batch.add(self._stdout, self._read_batched)

    def _read_batched(self, fd: int) -> None:
        """A batch's read; a full buffer (the child blocked on a full pipe) moves it to reads at once."""
        if self._read(fd) == _READ_SIZE and fd in self._open and self._batch is not None:
            self._batch.remove(fd)
            self._flood = [time.monotonic(), 0.0]
            self._loop.add_reader(fd, self._read_flooding, fd)

    def _read_flooding(self, fd: int) -> None:
        """Read at once while the child writes more than _FLOOD_BYTES per COALESCE; then batches again."""
        assert self._flood is not None
        self._flood[1] += self._read(fd)
        now = time.monotonic()
        if fd not in self._open or now - self._flood[0] < COALESCE:
            return
        if self._flood[1] >= _FLOOD_BYTES:
            self._flood = [now, 0.0]
            return
        self._loop.remove_reader(fd)
        self._flood = None
        if self._batch is not None:
            self._batch.add(fd, self._read_batched)

    def _read(self, fd: int) -> int:
        """One read of ``fd``: the bytes read, 0 when nothing was there yet (or the pipe is closed)."""
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return 0
        except OSError:
            data = b""
        if data:
            self._open[fd](data)
            return len(data)
        self._close_pipe(fd)
        return 0

    def _close_pipe(self, fd: int) -> None:
        if self._open.pop(fd, None) is None:
            return
        if fd == self._stdout and self._batch is not None:
            self._batch.remove(fd)  # a no-op while it is read at once (flooding)
        self._loop.remove_reader(fd)
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None and not pipe.closed and pipe.fileno() == fd:
                pipe.close()
        if not self._open and not self._drained.done():
            self._drained.set_result(None)

    def _on_exit(self) -> None:
        """The pidfd is readable: the child exited.  Reap it (instant now) through Popen."""
        self._loop.remove_reader(self._pidfd)
        # What the leader left in its group (``sh -c 'job & exec ffmpeg ...'``'s job) would outlive the
        # agent, write beside the next run and hold the pipes open (each exit waiting DRAIN_TIMEOUT).
        # Killed now, while the unreaped leader still holds the group id: it cannot reach a reused one.
        self.signal_group(signal.SIGKILL)
        try:
            # Its last report, its last stderr lines and EOF now, not a batch or a turn of the loop
            # later: wait() (and so a respawn) waits for them.
            for fd in list(self._open):
                for _ in range(_EXIT_READS):
                    if fd not in self._open or not self._read(fd):
                        break
        except Exception as exc:  # a reader's bug must not leave the child unreaped and wait() hung
            self._loop.call_exception_handler({"message": "progress reader failed", "exception": exc})
        self._proc.wait()
        os.close(self._pidfd)  # after the reap: signal_group checks returncode first
        self._pidfd = -1
        limits.children -= 1
        self._exited.set()


def describe_exit(returncode: int) -> str:
    """Supervisor-style wording: ``exit status 1`` or ``terminated by SIGKILL``."""
    if returncode < 0:
        try:
            return f"terminated by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"terminated by signal {-returncode}"
    return f"exit status {returncode}"
