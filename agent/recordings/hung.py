"""Recording folders that do not answer (a hung NFS or FUSE mount): found by bounded probes,
left out by retention until they answer, and said plainly in its status.

A stat of a path on a hung mount never returns: the thread sits in the kernel (in
``fuse_do_getattr``, say), killable only with the process.  Retention walks the whole
root (its inotify watches, its index), so one such stream folder held it back for every
stream, and the agent's start and exit with it.  Instead, before each walk and every
``recordings.probe_interval``, a probe (an lstat of every entry directly under the root on
an ``agent.blocking`` daemon thread, PROBE_CONCURRENCY at a time, each given up after
PROBE_TIMEOUT; one not answering within SLOT_HOLD gives up its slot and its counted thread
while it waits) finds the folders that do not answer; the watch and the scans leave them
out, and each is probed again every tick (a probe still stuck is not repeated: its ``key``)
until it answers.  A hang deeper below a stream's folder, or of the root itself, is not
found by the probe: retention then waits for the whole root, and its status says so after
START_PATIENCE.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.blocking import in_thread

log = logging.getLogger("vas.retention")
#: A probe (one lstat, one listing of the root) that has not returned after this long does not answer.
PROBE_TIMEOUT = 5.0
#: Folders probed at once.  All at once (one gather) queued 3,000 healthy folders' lstats behind the
#: worker threads: half timed out in the queue and retention left them out as hung (nothing there
#: deleted).  Each probe's timeout runs from its slot, so only a folder that does not answer fails.
PROBE_CONCURRENCY = 8
#: A probe running this long on its thread gives up its slot and stops counting against the worker
#: threads, still waiting for its verdict: kept for the whole PROBE_TIMEOUT, 50 folders on a hung
#: mount would take 50/8 x 5 s to find, and retention's start waits for that.
SLOT_HOLD = 0.5
#: Retention's watch and first index not up after this long: its status names what it waits for.
START_PATIENCE = 10.0
#: The status names this many folders (the snapshot's ``not_answering`` lists them all).
NAMED = 5
#: With a folder not answering, a retention call that has not returned after this long is named
#: (with none known not to answer, a hang deeper below a stream's folder: recordings.probe_interval,
#: but never sooner than this).
STUCK_AFTER = 10.0


def skipped_text(root: Path, names: set[str]) -> str | None:
    """What retention says about the stream folders it leaves out (pure); None when there are none."""
    if not names:
        return None
    shown = sorted(names)[:NAMED]
    paths = ", ".join(str(root / n) for n in shown) + (f" and {len(names) - NAMED} more" if len(names) > NAMED else "")
    return (f"{paths}: not answering (a hung mount?): retention leaves "
            f"{'it' if len(names) == 1 else 'them'} out (nothing there is indexed or deleted) until it answers")


def waiting_text(root: Path, *, root_answers: bool, waited: float) -> str:
    """What retention says while its watch of the root has not started (pure)."""
    if not root_answers:
        return (f"recordings root {root} is not answering (a hung mount?) after {waited:g}s: retention waits "
                "for it; nothing is indexed or deleted until it answers")
    return (f"a directory below {root} is not answering (a hung mount?): retention's watch has waited "
            f"{waited:g}s for it; nothing is indexed or deleted until it answers")


def stuck_after(hung: bool, probe_interval: float) -> float:
    """How long a retention call may run before the status names it (pure): STUCK_AFTER with a
    folder known hung; else probe_interval, never sooner than STUCK_AFTER (a short interval must
    not call an ordinary pass over many files stuck)."""
    return STUCK_AFTER if hung else max(probe_interval, STUCK_AFTER)


def stuck_text(calls: list[tuple[str, float]], now: float, after: float = STUCK_AFTER) -> str | None:
    """The oldest of retention's calls (``(what, since)``) not returned after ``after`` seconds (pure):
    a pass inside a folder when its mount hung holds every later pass until it answers."""
    late = [(since, what) for what, since in calls if now - since >= after]
    if not late:
        return None
    what = min(late)[1]
    return f"{what} has been running for more than {after:g}s: no other retention pass runs until it returns"


def problem_text(*parts: str | None) -> str | None:
    """The one line for retention's status (pure): every part that is set, or None."""
    said = [p for p in parts if p]
    return "; ".join(said) if said else None


class Answering:
    """The stream folders under ``root`` that do not answer, with the log lines and status about them.

    ``lstat`` is injectable for tests (a fake that blocks stands for a hung mount).
    """

    def __init__(self, root: Path, lstat: Callable[[Path], Any] = os.lstat,
                 listdir: Callable[[Path], list[str]] = os.listdir) -> None:
        self.root = root
        self._lstat, self._listdir = lstat, listdir
        self.hung: set[str] = set()  # names directly under the root: left out of every walk
        self.waiting: str | None = None  # the root's watch has not started: what it waits for
        self.root_answers = True
        self._watched = False  # the root's watch started once: a hang of the root since is news
        self._slots = asyncio.Semaphore(PROBE_CONCURRENCY)

    async def find(self) -> set[str]:
        """Probe the root and every entry under it (bounded); an ERROR per folder newly found hung.

        Returns the names newly found hung (their entries must leave the index)."""
        try:
            names = await self.probe(lambda: self._listdir(self.root), self.root)
        except (TimeoutError, OSError) as exc:
            answered = not isinstance(exc, TimeoutError)  # missing or unreadable: start() says so
            if self.root_answers and not answered and self._watched:  # (before, the wait is said: impatient)
                log.error("retention: %s", waiting_text(self.root, root_answers=False, waited=PROBE_TIMEOUT))
            self.root_answers = answered
            return set()
        if not self.root_answers and self._watched:
            log.info("retention: %s answers again", self.root)
        self.root_answers = True
        answers = await asyncio.gather(*(self._answers(n) for n in names))
        fresh = {n for n, ok in zip(names, answers) if not ok} - self.hung
        for name in sorted(fresh):
            log.error("recordings: %s is not answering (a hung mount?): retention leaves it out (nothing there "
                      "is indexed or deleted) until it answers", self.root / name)
        self.hung |= fresh
        return fresh

    async def recheck(self) -> set[str]:
        """The folders left out that answer again (no longer left out), each with an INFO."""
        names = sorted(self.hung)
        answers = await asyncio.gather(*(self._answers(n) for n in names))
        back = {n for n, ok in zip(names, answers) if ok}
        for name in sorted(back):
            log.info("recordings: %s answers again: retention indexes it and applies its policies", self.root / name)
        self.hung -= back
        return back

    def impatient(self, waited: float) -> None:
        """The root's watch has not started after ``waited`` seconds: say what it waits for (ERROR once)."""
        if self.waiting is None:
            self.waiting = waiting_text(self.root, root_answers=self.root_answers, waited=waited)
            log.error("retention: %s", self.waiting)

    def watching(self) -> None:
        """The root's watch started: clear the wait (an INFO if it was reported)."""
        self.root_answers = self._watched = True
        if self.waiting is not None:
            self.waiting = None
            log.info("retention: %s answers again: retention is watching it", self.root)

    def text(self) -> str | None:
        """The status line about folders that do not answer; None when all do."""
        hung_root = None if self.root_answers or self.waiting else \
            waiting_text(self.root, root_answers=False, waited=PROBE_TIMEOUT)  # hung since the watch started
        return problem_text(self.waiting, hung_root, skipped_text(self.root, self.hung))

    async def _answers(self, name: str) -> bool:
        await self._slots.acquire()
        held = [True]

        def free() -> None:  # once: when the probe turns slow (SLOT_HOLD) or returns
            if held[0]:
                held[0] = False
                self._slots.release()
        try:
            await self.probe(lambda: self._lstat(self.root / name), self.root / name, on_slow=free)
        except TimeoutError:
            return False
        except OSError:
            return True  # it answered, with an error (gone, ENOTCONN): not hung
        finally:
            free()
        return True

    async def probe(self, fn: Callable[[], Any], path: Path, on_slow: Callable[[], None] | None = None) -> Any:
        """``fn()`` (a look at ``path``) on a thread, ``TimeoutError`` after PROBE_TIMEOUT.  The key:
        a probe still stuck on this path fails at once instead of taking another thread.  Past
        SLOT_HOLD it no longer counts against the worker threads, and ``on_slow()`` runs."""
        return await in_thread(fn, timeout=PROBE_TIMEOUT, name=f"probe:{path}", key=f"probe:{path}",
                               patience=SLOT_HOLD, on_slow=on_slow)
