"""What the /v2/health API shows of the agent's own internals: only what a remote reader
needs (issue 18, item 15).

The snapshot is the host's full account (``vasctl status --json`` shows it to whoever may
read ``/run/vas``); the HTTP API is readable by anyone who reaches the port by default, so
it leaves out what maps the host for an attacker or identifies a viewer: the config's path
and hash (a hash of a file holding camera passwords invites offline guessing), the
runtime directory, the recordings root, the agent's pid, the SFU's API URL, reload error
texts (they quote the file's path and lines) and viewers' ``client_id``.  A remote reader
keeps every state, count, time and verdict.  These are allow-lists on purpose: a key
added to the snapshot later stays private until someone decides it is public.
"""
from __future__ import annotations

from typing import Any

AGENT_KEYS = ("status", "started_at", "version", "commit")
SFU_KEYS = ("configured", "managed", "state", "since", "generation", "restarts", "restart_reasons", "last_exit",
            "pid", "pid_started_at", "last_error")
CONSUMER_KEYS = ("consumer_id", "stream_id", "created_at", "last_heartbeat")
RELOAD_KEYS = ("ok", "at", "summary")


def _pick(data: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: data[k] for k in keys if k in data} if isinstance(data, dict) else {}


def agent(data: Any) -> dict[str, Any]:
    """The agent's status and start time (no pid, no runtime directory)."""
    return _pick(data, AGENT_KEYS)


def config(data: Any) -> dict[str, Any] | None:
    """Whether the last (re)load worked and when, and what waits for a restart (no path, hash or root)."""
    if not isinstance(data, dict):
        return None
    last = data.get("last_reload")
    out: dict[str, Any] = {"last_reload": _pick(last, RELOAD_KEYS) if isinstance(last, dict) else None,
                           "needs_restart": list(data.get("needs_restart") or [])}
    if isinstance(last, dict) and last.get("error"):
        out["last_reload"]["errors"] = len(last["error"]) if isinstance(last["error"], list) else 1
    return out


def sfu(data: Any) -> dict[str, Any] | None:
    """The SFU's state and restarts (no API URL)."""
    return _pick(data, SFU_KEYS) if isinstance(data, dict) else None


def consumer(data: Any) -> dict[str, Any]:
    """A viewer session (no ``client_id``)."""
    return _pick(data, CONSUMER_KEYS)
