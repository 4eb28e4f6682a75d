"""Entries of the recordings root that retention refuses, said out loud.

Retention never follows a symlink (a stream directory pointing elsewhere could
lead a deletion anywhere), so ``recordings/cam -> /bigdisk/cam`` is never
indexed, never aged and never counted for ``min_free``.  Refusing is right;
being silent is not: :func:`find_unsafe` names every such entry, the agent logs
it at start and on reload, and status, the API and a metric show it.
"""
from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("vas.retention")
#: The reason shown in status and the API (short: a table cell and a JSON field).
SYMLINK = "symlink, retention not applied"
NOT_A_DIRECTORY = "not a directory, retention not applied"
#: Symlinks inside one stream's directory listed (and counted) at most: the rest are summed in the log.
MAX_NESTED = 20


def find_unsafe(root: Path, configured: Iterable[str], nested: dict[str, list[str]] | None = None
                ) -> dict[str, str]:
    """``{name: reason}``: every symlink directly under ``root``, every configured stream
    whose path there is something other than a directory (blocking: lstat only), and
    ``STREAM/PATH`` for the first MAX_NESTED symlinks the index's scan met inside each
    stream's tree (``nested``)."""
    out: dict[str, str] = {}
    for sid, links in (nested or {}).items():
        out.update((f"{sid}/{rel}", SYMLINK) for rel in links[:MAX_NESTED])
    try:
        with os.scandir(root) as entries:
            for e in entries:
                if e.is_symlink():
                    out[e.name] = SYMLINK
    except OSError:
        return out  # the root itself is reported by retention's own start
    for sid in configured:
        if sid in out:
            continue
        try:
            if not stat.S_ISDIR(os.lstat(root / sid).st_mode):
                out[sid] = NOT_A_DIRECTORY
        except FileNotFoundError:
            pass  # nothing recorded yet
        except OSError:
            out[sid] = NOT_A_DIRECTORY
    return out


def announce(root: Path, unsafe: dict[str, str], configured: Iterable[str]) -> None:
    """One WARNING per unsafe entry: what is wrong, what it costs, what to do."""
    streams = set(configured)
    inside: dict[str, list[str]] = {}
    for name in unsafe:
        if "/" in name:
            inside.setdefault(name.split("/", 1)[0], []).append(name.split("/", 1)[1])
    for sid, rels in sorted(inside.items()):
        log.warning("recordings: %d symlink(s) inside %s/%s (%s): retention never follows them and never "
                    "deletes what they point to; record into plain directories", len(rels), root, sid,
                    ", ".join(sorted(rels)[:5]) + (", ..." if len(rels) > 5 else ""))
    for name, reason in sorted(unsafe.items()):
        if "/" in name:
            continue
        what = f"stream {name}'s recordings" if name in streams else f"{root / name}"
        if reason == SYMLINK:
            target = _target(root / name)
            log.warning("recordings: %s/%s is a symlink%s: retention (age, size, min_free) is NOT applied "
                        "to %s and never deletes there; move the directory under %s, or mount the other disk "
                        "at %s/%s (a mount point is not a symlink)", root, name, f" to {target}" if target else "",
                        what, root, root, name)
        else:
            log.warning("recordings: %s/%s is not a directory: retention is NOT applied to %s; "
                        "remove or rename it", root, name, what)


def _target(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None
