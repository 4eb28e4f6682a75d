"""The agent's state snapshot: its file name, freshness rules, atomic writer and reader.

The agent writes ``{runtime_dir}/state.json`` promptly after state changes and
touches it every second so readers (vasctl, the exporter) can tell a hung agent
from a quiet one by the file's age.  Stdlib only: the exporter imports this.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

SNAPSHOT_NAME = "state.json"
SOCKET_NAME = "agent.sock"
LOCK_NAME = "agent.lock"
SCHEMA_VERSION = 1
#: The agent proves it is alive this often (touching an unchanged snapshot).
HEARTBEAT_INTERVAL = 1.0
#: A snapshot older than this means the agent is stopped or hung.
STALE_AFTER = 5.0
#: A snapshot dated further than this ahead of the clock says nothing about the agent:
#: only a touch seen while watching proves it alive (a frozen agent's file stays put).
FUTURE_SLACK = 1.0


def write_atomic(path: Path, data: dict[str, Any] | str) -> None:
    """Replace ``path`` with ``data`` (a dict, or JSON text): readers see the old file or the new one, never half."""
    fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            # dumps, not dump: only dumps uses the C encoder (4x faster at 500 streams).
            fh.write(data if isinstance(data, str) else json.dumps(data, separators=(",", ":")))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_leftovers(directory: Path) -> int:
    """Delete temporary snapshots a killed agent left half-written (call with the lock held)."""
    removed = 0
    try:
        names = [n for n in os.listdir(directory) if n.startswith(".state-") and n.endswith(".tmp")]
    except OSError:
        return 0
    for name in names:
        try:
            os.unlink(directory / name)
            removed += 1
        except OSError:
            pass
    return removed


def touch(path: Path) -> None:
    """Refresh the snapshot's mtime without rewriting it (the liveness signal)."""
    os.utime(path)


def float_sized(digits: str) -> int:
    """An integer of the snapshot (``json``'s ``parse_int``), refused when no float holds it:
    every reader computes and writes its numbers as floats (an uptime, a sample's value), and
    ``10**400`` would raise OverflowError there, not name the file as unreadable."""
    n = int(digits)
    try:
        float(n)
    except OverflowError:
        raise ValueError(f"an integer of {len(digits)} digits: no float holds it") from None
    return n


def loads(text: str) -> Any:
    """The snapshot's JSON as the ``json`` module reads it, but for an integer no float holds
    (a ValueError, as for bad JSON): see :func:`float_sized`."""
    return json.loads(text, parse_int=float_sized)


class SnapshotUnavailable(Exception):
    """No readable snapshot: the agent never ran with this runtime_dir, or the file is bad."""


def read(path: Path, *, now: float | None = None) -> tuple[dict[str, Any], float]:
    """The snapshot and its age in seconds (by mtime).

    Negative when the file is dated ahead of the clock (a backward wall-clock step since
    the agent last touched it): that age proves nothing, see :data:`FUTURE_SLACK`.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            age = (time.time() if now is None else now) - os.fstat(fh.fileno()).st_mtime
            return loads(fh.read()), age
    except FileNotFoundError:
        raise SnapshotUnavailable(f"no snapshot at {path}: is vas-agent running with this runtime_dir?") from None
    except PermissionError:
        raise SnapshotUnavailable(f"permission denied on {path}: run as root or as a member of group vas") from None
    except OSError as exc:
        raise SnapshotUnavailable(f"cannot read snapshot {path}: {exc}") from None
    except (ValueError, RecursionError) as exc:  # garbage bytes, bad JSON, absurd nesting
        raise SnapshotUnavailable(f"agent state unreadable: {path}: {str(exc)[:200]}") from None
