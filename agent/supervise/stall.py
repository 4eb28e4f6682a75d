"""Stall detection: a process that is alive but makes no progress is a failure."""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from agent.config.model import StreamConfig
from agent.supervise.ffmpeg import Progress
from agent.supervise.process import Child

log = logging.getLogger("vas.stream")
#: A timer this late means the agent itself was not running (SIGSTOP, VM freeze, swap-in).
PAUSE_GAP = 1.0
#: After a deadline passes, how long pending output may still be read before the verdict:
#: a poll interrupted by SIGCONT returns no events, so the pipe is read only on the next turn.
SETTLE = 0.5


def stall_verdict(*, now: float, due: float, last: float, timeout: float, settled: bool) -> tuple[str, float]:
    """What a stall timer due at ``due`` does when it runs at ``now`` (monotonic seconds).

    ``("rearm", now + timeout)`` when the timer ran late by more than PAUSE_GAP (the agent was
    paused, so it cannot say the child was quiet); ``("wait", deadline)`` while progress is
    recent; ``("settle", now + SETTLE)`` once, to read what the child wrote before judging;
    then ``("kill", now)``.
    """
    if now - due > PAUSE_GAP:
        return "rearm", now + timeout
    if now < last + timeout:
        return "wait", last + timeout
    if not settled:
        return "settle", now + SETTLE
    return "kill", now


class Watched(Protocol):
    """What a stall watch needs of its stream: its settings now, and its running child."""

    cfg: StreamConfig
    child: Child | None


class StallWatch:
    """Kills the child when progress stops advancing for ``stall_timeout``.

    One timer per child that re-arms itself lazily: progress only records a
    timestamp, so a busy stream costs no timer churn.
    """

    def __init__(self, stream: Watched) -> None:
        self.stream = stream
        self.fired = False
        self.report: Progress | None = None  # last report that advanced, this run
        self._last = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None
        self._due = self._last
        self._settled = False

    def arm(self) -> None:
        timeout = self.stream.cfg.stall_timeout
        if timeout > 0:
            self._last = time.monotonic()
            self._schedule(self._last + timeout)

    def reconfigure(self) -> None:
        """Follow a changed ``stall_timeout`` on the running process (armed, moved or off)."""
        was_armed = self._handle is not None
        self.cancel()
        timeout = self.stream.cfg.stall_timeout
        if timeout > 0 and not self.fired:
            if not was_armed:  # was off: a stream quiet until now gets a full timeout
                self._last = time.monotonic()
            self._schedule(self._last + timeout)

    def touch(self) -> None:
        self._last = time.monotonic()
        self._settled = False

    def cancel(self) -> None:
        if self._handle:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        self._due = deadline
        self._handle = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()), self._check)

    def _check(self) -> None:
        self._handle = None
        timeout = self.stream.cfg.stall_timeout
        if timeout <= 0:
            return
        now = time.monotonic()
        action, at = stall_verdict(now=now, due=self._due, last=self._last, timeout=timeout, settled=self._settled)
        if action == "rearm":
            log.info("stall watch: %s: the agent itself did not run for %.1fs; giving the process a full "
                     "%gs again", self.stream.cfg.id, now - self._due, timeout)
            self._last, self._settled = now, False
        self._settled = action == "settle"
        if action != "kill":
            self._schedule(at)
            return
        child = self.stream.child
        if child is not None:
            log.warning("stalled: %s (no progress for %gs), killing pid %d",
                        self.stream.cfg.id, timeout, child.pid)
            self.fired = True
            child.kill()


#: How often a command without progress reports has its recording directory checked.
GROWTH_CHECK_INTERVAL = 2.0


async def watch_growth(directory: Path, stall: StallWatch, on_growth: Callable[[], None]) -> None:
    """Progress for commands that report none: a newer file in the recording directory."""
    from agent.blocking import in_thread
    key = f"growth:{directory}"  # one stuck check per directory at most, not one per 2 s
    newest = await in_thread(lambda: _newest_mtime(directory), timeout=10, name="growth", key=key)
    while True:
        await asyncio.sleep(GROWTH_CHECK_INTERVAL)
        try:
            now = await in_thread(lambda: _newest_mtime(directory), timeout=10, name="growth", key=key)
        except (TimeoutError, OSError):
            continue  # a slow disk is no progress: the stall timer decides
        if now > newest:
            newest = now
            stall.touch()
            on_growth()


def _newest_mtime(directory: Path) -> float:
    """The newest modification time of a file directly in ``directory`` (0 when none)."""
    try:
        with os.scandir(directory) as entries:
            return max((e.stat(follow_symlinks=False).st_mtime for e in entries if e.is_file(follow_symlinks=False)),
                       default=0.0)
    except FileNotFoundError:
        return 0.0


#: Free bytes the recording filesystem needs before a dropped recording output is reopened.
REOPEN_FREE_BYTES = 64 << 20
#: Free inodes it needs too (each segment and each playlist's temporary file takes one): out of
#: inodes, FFmpeg drops the output however many bytes are free.
REOPEN_FREE_INODES = 64


async def watch_recording(playlist: Path, segment_duration: float, *, media_flowing: Callable[[], bool],
                          reopen: Callable[[], None]) -> None:
    """The recording half of a tee output (HLS + RTP) stays dropped after a failure (out of
    inodes, say): when no segment appears for a while although media flows, and the disk has
    room again (bytes and inodes), ask for the process to be restarted so recording resumes by itself.

    FFmpeg renames a new ``playlist`` into place as each segment completes, so its mtime is the
    newest segment's: one ``stat`` a check, however many segments the folder holds (a scan of
    the folder cost 2 ms of CPU per 1,300 segments, per stream every 2 s, and grew with the
    footage kept).  The free space is looked up only once the recording has been quiet.  Something
    else where the folder was (a file put there) is said once and not reopened: the restart's mkdir
    would fail, and the stream would not start at all, RTP to the SFU and all."""
    from agent.blocking import in_thread
    quiet_after = max(3 * segment_duration, 10.0)
    key = f"recording-watch:{playlist.parent}"  # one stuck check per directory at most, not one per 2 s
    newest, since, said = 0.0, time.monotonic(), False
    while True:
        await asyncio.sleep(GROWTH_CHECK_INTERVAL)
        try:
            now = await in_thread(lambda: _mtime(playlist), timeout=10, name="recording-watch", key=key)
            if now > newest:
                newest, since = now, time.monotonic()
                continue
            if time.monotonic() - since <= quiet_after or not media_flowing():
                continue
            room = await in_thread(lambda: _has_room(playlist.parent), timeout=10, name="recording-watch", key=key)
        except NotADirectoryError:
            if not said:  # once a process: the watch goes on checking every 2 s
                log.warning("recording stopped: %s is not a directory; remove it and recording resumes "
                            "(live video goes on meanwhile)", playlist.parent)
                said = True
            continue
        except (TimeoutError, OSError):
            continue
        if room:
            reopen()
            return


def _mtime(path: Path) -> float:
    """``path``'s modification time (0 when there is none yet)."""
    try:
        return os.stat(path).st_mtime
    except (FileNotFoundError, NotADirectoryError):  # the folder removed, or a file put in its place
        return 0.0


def _has_room(directory: Path) -> bool:
    """REOPEN_FREE_BYTES and REOPEN_FREE_INODES free where ``directory`` is (a file system that
    counts no inodes, ``f_files`` 0, by bytes alone).  A folder removed under the running FFmpeg
    (``rm -r`` of a camera's footage) is judged where the restart makes it again, in its parent:
    FFmpeg never makes it, so recording would stay stopped for the life of the process.  With
    the parent gone too (the recording root), FileNotFoundError: nothing to reopen into yet.  Not a
    directory (a file in its place: statvfs would answer for the file's file system),
    NotADirectoryError."""
    try:
        if not stat.S_ISDIR(os.stat(directory).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory))
        st = os.statvfs(directory)
    except FileNotFoundError:
        st = os.statvfs(directory.parent)
    return (st.f_bavail * st.f_frsize >= REOPEN_FREE_BYTES
            and (st.f_files == 0 or st.f_favail >= REOPEN_FREE_INODES))
