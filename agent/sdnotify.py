"""systemd notifications (``sd_notify``) without libsystemd."""
from __future__ import annotations

import os
import socket


class Notifier:
    """Sends ``KEY=value`` lines to ``$NOTIFY_SOCKET``; does nothing when it is unset."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = env.get("WATCHDOG_USEC", "")
        pid_ok = env.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid())
        #: Half the watchdog timeout in seconds, or None when systemd set no watchdog.
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and pid_ok else None

    @property
    def enabled(self) -> bool:
        return bool(self._addr)

    def notify(self, **fields: object) -> None:
        """``notify(READY=1, STATUS="3 live")`` sends ``READY=1\\nSTATUS=3 live``."""
        if not self._addr:
            return
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(msg, self._addr)
            except OSError:
                pass  # systemd gone: nothing useful to do about it
