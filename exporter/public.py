"""What the /v2/health API shows of the agent's own internals: only what a remote reader
needs.

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

import re
from typing import Any

from agent.redact import redact_url

AGENT_KEYS = ("status", "started_at", "version", "commit")
SFU_KEYS = ("configured", "managed", "state", "since", "generation", "restarts", "restart_reasons", "last_exit",
            "pid_started_at", "last_error")  # no pid: the agent's is left out, and so is its child's
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
                           "needs_restart": _list(data.get("needs_restart"))}
    if isinstance(last, dict) and last.get("error"):
        out["last_reload"]["errors"] = len(last["error"]) if isinstance(last["error"], list) else 1
    return out


def _list(value: Any) -> list[Any]:
    """A list of the snapshot's, a copy (the shape does not look inside ``config``)."""
    return list(value) if isinstance(value, list) else []


def sfu(data: Any, snapshot: Any = None) -> dict[str, Any] | None:
    """The SFU's state and restarts (no API URL, no pid; the host's paths out of its last errors)."""
    if not isinstance(data, dict):
        return None
    out = _pick(data, SFU_KEYS)
    if "last_error" in out:
        out["last_error"] = errors(out["last_error"], snapshot)
    return out


def credentials_hidden(stream: dict[str, Any]) -> dict[str, Any]:
    """The stream's ``url`` with any password as ``***``: the agent writes it so, and a snapshot
    written otherwise (an older agent, a hand-made file) must not hand a camera's password out."""
    url = stream.get("url")
    return {"url": redact_url(url)} if isinstance(url, str) else {}


def errors(lines: Any, snapshot: Any) -> list[str]:
    """A child's last stderr lines without the host's own paths: FFmpeg names every segment it
    fails to write (``Failed to open file '/var/lib/vas/recordings/cam/...'``), so the raw lines
    gave away the recordings root, the runtime directory and the config's path that the rest of
    the answer leaves out.  Each becomes a placeholder (``<recordings>/cam/...``)."""
    if not isinstance(lines, list):
        return []
    data = snapshot if isinstance(snapshot, dict) else {}
    cfg, agent_ = data.get("config") or {}, data.get("agent") or {}
    paths = [(cfg.get("recordings_root"), "<recordings>"), (agent_.get("runtime_dir"), "<runtime_dir>"),
             (cfg.get("path"), "<config>")]  # pairs, not a dict: a value may be a list (unhashable)
    known = sorted(((p, name) for p, name in paths if isinstance(p, str) and len(p) > 1),
                   key=lambda item: -len(item[0]))  # the longest first: a root inside another is named as itself
    out = []
    for line in lines:
        text = str(line)
        for path, name in known:
            text = text.replace(path, name)
        out.append(redact_url(text))  # FFmpeg names its input URL in errors: never its password
    return out


def consumer(data: Any) -> dict[str, Any]:
    """A viewer session (no ``client_id``)."""
    return _pick(data, CONSUMER_KEYS)


def fleet_error(text: Any) -> str | None:
    """Why this node is cut off from etcd, as ``/readyz`` shows it to anyone: the error's kind,
    not its text, which names etcd's endpoints and the etcd user (``etcd http://10.0.0.5:2379:
    cannot authenticate as 'vasnode'``).  The whole text is in the agent's log and snapshot."""
    if not isinstance(text, str) or not text:
        return None
    kind = re.match(r"[A-Za-z_][A-Za-z0-9_]*(?=[:(])", text)
    return f"{kind.group(0) if kind else 'cut off'} (the reason: vasctl status, the agent's log)"
