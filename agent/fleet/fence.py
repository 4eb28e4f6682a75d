"""Fleet mode: a paused agent's children stop before another node takes its cameras.

Every child runs in its own session (so a stop of the agent is not a stop of
FFmpeg), which means a SIGSTOPped agent's FFmpegs would record and send on
while another node, seeing the lease expire, runs the same cameras.  The
agent therefore vouches for its children with a separate, tiny fence process
(agent/fleet/fence_proc.py) that a freeze of the agent does not freeze: "my
children may run until ``until``" (``lease_ttl`` from now), renewed a few
times a second while the agent is awake.  A voucher that lapses means the
agent was frozen for ``lease_ttl``: the fence stops the children, and the
agent, once awake, starts nothing until etcd has told it what it still owns
(see ``Fleet`` in agent/fleet/node.py and docs/fleet.md).

Why a separate process rather than a watchdog inside each FFmpeg: the
operator's verbatim commands are used as written, and one process per agent
costs one pipe write per renewal whatever the number of streams.
"""
from __future__ import annotations

import array
import fcntl
import json
import logging
import os
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

from agent.supervise.process import child_env, dying_with_agent

log = logging.getLogger("vas.fleet")
SCRIPT = Path(__file__).with_name("fence_proc.py")


#: Seconds between vouchers while the agent is awake.
VOUCH_INTERVAL = 0.25
#: The fence left vouchers unread this long (in ``lease_ttl``): it is stopped or stuck, and replaced.
STUCK_TTLS = 0.5


class Fence:
    """The agent's side: ``start()``, ``tick()`` a few times a second, ``resume()``, ``close()``.

    ``lapsed_at`` is set (monotonic) once the agent finds its own voucher
    expired: it was frozen and the fence has stopped its children.  Until
    ``resume()`` is given an etcd contact made after that, ``may_spawn()`` is
    False and no stream starts a process.
    """

    def __init__(self, pgids: Callable[[], list[int]], ttl: float) -> None:
        self._pgids, self.ttl = pgids, ttl
        self._proc: subprocess.Popen[bytes] | None = None
        self.until = 0.0
        self.lapsed_at: float | None = None
        self.replaced = 0  # fences found stopped, stuck or gone and started anew
        self._unread_since: float | None = None

    def tick(self) -> None:
        """Vouch for ``ttl`` more seconds, unless the last voucher already lapsed."""
        now = time.monotonic()
        if self.until and now >= self.until and self.lapsed_at is None:
            self.lapsed_at = now
            log.error("fleet: this agent was frozen for %.1fs (over lease_ttl %gs): the lease fence stopped its "
                      "streams; nothing starts again until etcd says what this node still owns",
                      now - self.until + self.ttl, self.ttl)
        if self.lapsed_at is None:
            self.vouch(now + self.ttl)

    def resume(self, contact_at: float) -> None:
        """``contact_at``: when etcd last answered; vouch again if that was after the lapse."""
        if self.lapsed_at is not None and contact_at > self.lapsed_at:
            log.info("fleet: back in touch with etcd after a freeze: streams this node owns may start again")
            self.lapsed_at, self.until = None, 0.0
            self.tick()

    def may_spawn(self) -> bool:
        """True while the fence would let a new child live (the agent is vouching)."""
        return self.lapsed_at is None and time.monotonic() < self.until

    def start(self) -> None:
        """Spawn the fence process (own session; dies with the agent)."""
        argv, preexec = dying_with_agent([sys.executable, "-I", "-S", str(SCRIPT)])
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=child_env(),
                                      start_new_session=True, preexec_fn=preexec)
        assert self._proc.stdin is not None
        os.set_blocking(self._proc.stdin.fileno(), False)
        log.info("fleet: lease fence started (pid %d)", self._proc.pid)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def vouch(self, until: float) -> None:
        """The children may run until ``until`` (CLOCK_MONOTONIC seconds)."""
        self.until = until
        self.refresh()

    def refresh(self) -> None:
        """Send the current voucher with the current children (after a spawn)."""
        if self._proc is None or self._proc.stdin is None or not self.until:
            return
        if (why := self._stuck(self._proc.stdin.fileno())) is not None:
            self._replace(why)
        line = json.dumps({"until": self.until, "pgids": self._pgids()}).encode() + b"\n"
        try:
            written = os.write(self._proc.stdin.fileno(), line)
        except BlockingIOError:
            written = 0
        except OSError as exc:  # the fence died; the next voucher goes to a new one
            self._replace(f"it is gone ({exc})")
            return
        if written < len(line):
            # A full pipe holds only stale vouchers (the newest were dropped): read later, they would fire.
            self._replace("its input is full")
            self.refresh()

    def _stuck(self, fd: int) -> str | None:
        """Why the fence is not reading its vouchers (SIGSTOPped, hung), or None."""
        unread = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, unread)
        now = time.monotonic()
        if not unread[0]:
            self._unread_since = None
        elif self._unread_since is None:
            self._unread_since = now
        elif now - self._unread_since > STUCK_TTLS * self.ttl:
            return f"it has read no voucher for {now - self._unread_since:.1f}s (stopped?)"
        return None

    def _replace(self, why: str) -> None:
        """Kill this fence (it could not act, or would act on stale vouchers) and start another."""
        assert self._proc is not None
        log.error("fleet: lease fence (pid %d) replaced: %s; the streams were unguarded meanwhile",
                  self._proc.pid, why)
        self._proc.kill()  # SIGKILL works on a stopped process; its stale vouchers go with its pipe
        self._reap()
        self._unread_since = None
        self.replaced += 1
        self.start()

    def close(self) -> None:
        """End the fence (EOF on its stdin); the children are the agent's to stop."""
        if self._proc is None:
            return
        self._reap()

    def _reap(self) -> None:
        assert self._proc is not None
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except OSError:
            pass
        deadline = time.monotonic() + 1.0
        while self._proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
