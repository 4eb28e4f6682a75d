"""Keeps ``{runtime_dir}/state.json`` true and fresh.

State changes are written within FLUSH_DELAY (several changes, one write);
progress counters alone at most every PROGRESS_FLUSH_INTERVAL.  Such flushes are
rendered on the event loop (a consistent picture) and written to disk by one
long-lived thread: the file system's part (about a millisecond at 200 streams on
ext4, more when its journal is busy) must not hold up a child's respawn.  Every second
the file is touched (the liveness proof readers go by) and systemd's watchdog
is petted, from the event loop itself.  Nothing here raises: a removed
runtime_dir is recreated, a full one is reported and retried, and the
heartbeat outlives any error, because supervision matters more than the file.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent import snapshot
from agent.sdnotify import Notifier

log = logging.getLogger("vas.agent")
#: State changes within this window are written as one snapshot.
FLUSH_DELAY = 0.05
#: Progress counters alone rewrite the snapshot at most this often.
PROGRESS_FLUSH_INTERVAL = 5.0
#: A snapshot that cannot be written is reported at most this often.
WRITE_ERROR_LOG_INTERVAL = 60.0
#: Upper bounds (seconds) of the event-loop lag histogram.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: A heartbeat this late is published with the next progress flush; quiet ones once a minute.
LAG_PUBLISH_ABOVE = 0.025
LAG_PUBLISH_EVERY = 60


class LoopLag:
    """How late the heartbeat runs: a free sample of event-loop lag every second."""

    def __init__(self) -> None:
        self.counts = [0] * (len(LAG_BUCKETS) + 1)
        self.sum = 0.0
        self.max = 0.0

    def observe(self, lag: float) -> None:
        lag = max(0.0, lag)
        self.counts[next((i for i, b in enumerate(LAG_BUCKETS) if lag <= b), len(LAG_BUCKETS))] += 1
        self.sum += lag
        self.max = max(self.max, lag)

    def view(self) -> dict:
        """Cumulative buckets, as a Prometheus histogram counts them."""
        total, buckets = 0, []
        for bound, n in zip([*LAG_BUCKETS, "+Inf"], self.counts):
            total += n
            buckets.append([bound, total])
        return {"buckets": buckets, "sum": self.sum, "count": total, "max": self.max}


class _Writer:
    """One long-lived daemon thread writing the newest text handed to it (older ones are dropped).

    ``settle()`` drops what is queued and waits for a write in progress, so a write made on
    the loop right after it cannot be replaced by an older text.
    """

    def __init__(self, path: Path, failed: Callable[[Exception], None]) -> None:
        self._path, self._failed = path, failed
        self._cond = threading.Condition()
        self._busy = threading.Lock()  # held while a text is on its way to disk
        self._text: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, text: str) -> None:
        """Write ``text`` soon; a failure is reported to ``failed`` on the calling loop."""
        with self._cond:
            if self._closed:
                raise RuntimeError("snapshot writer used after close()")
            self._text, self._loop = text, asyncio.get_running_loop()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="snapshot-writer", daemon=True)
                self._thread.start()
            self._cond.notify()

    def settle(self) -> None:
        """Drop the queued text and wait until no write is in progress."""
        with self._cond:
            self._text = None
        with self._busy:
            pass

    def close(self) -> None:
        """Drop the queued text and let the thread end (after a write in progress); for good."""
        with self._cond:
            self._closed, self._text = True, None
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._text is None and not self._closed:
                    self._cond.wait()
                text, loop, self._text = self._text, self._loop, None
                if self._closed or text is None:
                    return
                self._busy.acquire()  # under the condition: settle() sees the text or the write
            try:
                snapshot.write_atomic(self._path, text)
            except Exception as exc:  # not only OSError: an error that ended the thread would leave
                self._report(loop, exc)  # the file stale while the heartbeat keeps its mtime fresh
            finally:
                self._busy.release()

    def _report(self, loop: asyncio.AbstractEventLoop | None, exc: Exception) -> None:
        try:
            if loop is not None:
                loop.call_soon_threadsafe(self._failed, exc)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            pass


class Publisher:
    """Writes the snapshot rendered by ``render``; ``start()`` the heartbeat, ``close()`` it."""

    def __init__(self, path: Path, render: Callable[[], str], notifier: Notifier, *,
                 on_restored: Callable[[], None], intact: Callable[[], bool] = lambda: True) -> None:
        """``intact``: whether the caller's own files in the runtime_dir (its lock, its socket) are
        still there, asked every second; ``on_restored`` puts them back (also after a removal)."""
        self.path = path
        self._render, self._notifier, self._on_restored = render, notifier, on_restored
        self._intact = intact
        self._flush_handle: asyncio.TimerHandle | None = None
        self._heartbeat: asyncio.TimerHandle | None = None
        self._progress_dirty = False
        self._pending = False  # the last write failed: the heartbeat writes instead of touching
        self._written_at = 0.0
        self._error_logged_at = -WRITE_ERROR_LOG_INTERVAL
        self._closed = False
        self.lag = LoopLag()
        self._lag_published = 0  # samples the last written snapshot holds
        self._due: float | None = None  # loop time the next beat is scheduled for
        self._writer = _Writer(path, self._write_failed)

    def start(self) -> None:
        """Write now and start the once-a-second heartbeat."""
        if snapshot.remove_leftovers(self.path.parent):
            log.info("removed a half-written snapshot left by a killed agent")
        self.write()
        self._beat()

    def close(self) -> None:
        """Stop the heartbeat and pending flushes (the caller writes the final snapshot)."""
        self._closed = True
        self._writer.close()
        for handle in (self._heartbeat, self._flush_handle):
            if handle is not None:
                handle.cancel()
        self._heartbeat = self._flush_handle = None

    def changed(self, state_changed: bool) -> None:
        """Something shown changed: a state (write soon) or only counters (write eventually)."""
        if not state_changed:
            self._progress_dirty = True
        elif self._flush_handle is None and not self._closed:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        """Render the snapshot now and have the writer thread write it (a failure comes back to
        the loop as a :meth:`write`, which recreates a removed runtime_dir and reports)."""
        if self._flush_handle:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._writer.submit(self._render())
        self._written()

    def write(self) -> bool:
        """Write the snapshot now, on the loop; never raises.  False when it could not be written."""
        if self._flush_handle:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._writer.settle()  # a flush still on its way must not replace this newer text
        try:
            try:
                snapshot.write_atomic(self.path, self._render())
            except FileNotFoundError:  # the runtime_dir was removed: put it back
                self._restore()
                snapshot.write_atomic(self.path, self._render())
        except OSError as exc:
            self._pending = True
            self._report(exc)
            return False
        self._written()
        return True

    def _written(self) -> None:
        self._written_at, self._progress_dirty, self._pending = time.monotonic(), False, False
        self._lag_published = sum(self.lag.counts)

    def _write_failed(self, exc: Exception) -> None:
        """The writer thread could not write a flush: an OSError is written again on the loop, with
        its repairs and reports; anything else is raised here, for the loop's handler to log."""
        if not isinstance(exc, OSError):
            raise exc
        if not self._closed:
            self.write()

    def _report(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._error_logged_at >= WRITE_ERROR_LOG_INTERVAL:
            self._error_logged_at = now
            log.error("cannot write snapshot %s: %s; retrying every second", self.path, exc)

    def _restore(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        log.warning("runtime_dir %s was removed: recreated it", self.path.parent)
        if not self._closed:
            self._on_restored()

    def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        if self._due is not None:
            # Published with the next progress flush (at most every 5 s): at once when the loop
            # was late, else once a minute; on its own a quiet beat is no reason to rewrite the file.
            late = loop.time() - self._due
            self.lag.observe(late)
            if late > LAG_PUBLISH_ABOVE or sum(self.lag.counts) - self._lag_published >= LAG_PUBLISH_EVERY:
                self._progress_dirty = True
        try:
            self._refresh()
        except Exception:  # the heartbeat must outlive any error, or the agent looks dead
            log.exception("heartbeat failed")
        finally:
            if self._notifier.watchdog_interval:
                self._notifier.notify(WATCHDOG=1)
            if not self._closed:
                interval = min(snapshot.HEARTBEAT_INTERVAL, self._notifier.watchdog_interval or 1e9)
                self._due = loop.time() + interval
                self._heartbeat = loop.call_at(self._due, self._beat)

    def _refresh(self) -> None:
        progress_due = self._progress_dirty and time.monotonic() - self._written_at >= PROGRESS_FLUSH_INTERVAL
        if self._pending:
            self.write()  # the last write failed: retry with the repairs (a removed runtime_dir)
            return
        if progress_due:
            self.flush()
            return
        try:
            snapshot.touch(self.path)
        except FileNotFoundError:  # the file or the whole runtime_dir was removed
            self.write()
        except OSError as exc:
            self._report(exc)
        else:
            if not self._closed and not self._intact():
                # Emptied, not removed (`rm /run/vas/*`): a flush puts the snapshot back at once,
                # so only the caller's own files tell.
                log.warning("files in runtime_dir %s were removed: recreating them", self.path.parent)
                self._on_restored()
