"""Each stream's last known retention, remembered next to the recordings.

A stream renamed or removed from ``streams.yaml`` leaves its directory behind (an
*orphan*).  Its footage must not go sooner than the retention the stream had, so the
agent keeps ``{root}/.vas/retention.json`` (``{"streams": {id: seconds}}``) current on
start and on every reload.  It lives under the root, not in the runtime directory: it
must survive a reboot and travel with the recordings.  A directory nobody ever
configured (an operator's own folder) gets ``recordings.orphan_retention``.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .config import Config
from .segment_index import SegmentIndex

log = logging.getLogger("vas.retention")
STATE_DIR = ".vas"
STATE_FILE = "retention.json"


def orphan_max_age(remembered: float | None, orphan_retention: float) -> float:
    """Seconds an orphan's segments are kept (0: for ever).

    Never less than the stream's own retention; a stream that kept for ever (0) still
    does; a directory never configured gets ``orphan_retention``.
    """
    if remembered == 0 or orphan_retention == 0:
        return 0.0
    return max(remembered or 0.0, orphan_retention)


def load(root: Path) -> dict[str, float]:
    """The remembered retentions; an unreadable or damaged file is an empty memory (logged)."""
    path = root / STATE_DIR / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        streams = data["streams"]
        return {str(k): float(v) for k, v in streams.items() if isinstance(v, (int, float)) and v >= 0}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.error("retention: cannot read %s (%s): orphaned directories get recordings.orphan_retention",
                  path, exc)
        return {}


def merged(known: Mapping[str, float], cfg: Config, on_disk: Iterable[str]) -> dict[str, float]:
    """``known`` updated with every configured stream's retention; entries of streams neither
    configured nor on disk any more are dropped (the memory stays as small as the root)."""
    keep = set(on_disk) | set(cfg.streams)
    out = {sid: v for sid, v in known.items() if sid in keep}
    out.update({sid: s.recording.retention for sid, s in cfg.streams.items()})
    return out


def save(root: Path, streams: Mapping[str, float]) -> None:
    """Write the memory atomically (temp file, fsync, rename); errors are logged, not raised."""
    folder = root / STATE_DIR
    tmp = folder / f".{STATE_FILE}.tmp"
    try:
        folder.mkdir(mode=0o755, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"streams": dict(sorted(streams.items()))}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / STATE_FILE)
    except OSError as exc:
        log.error("retention: cannot write %s (%s): orphaned directories may get recordings.orphan_retention "
                  "after a restart", folder / STATE_FILE, exc.strerror or exc)


def removed_notes(old: Config, new: Config, index: SegmentIndex, remembered: Mapping[str, float]) -> list[str]:
    """One :func:`orphan_note` per stream of ``old`` gone from ``new`` that has recordings."""
    notes = []
    for sid in old.streams:
        stats = index.stats(sid)
        if sid not in new.streams and stats[0]:
            max_age = orphan_max_age(remembered.get(sid), new.recordings.orphan_retention)
            notes.append(orphan_note(sid, index.root / sid, stats, max_age))
    return notes


def orphan_note(sid: str, where: Path, stats: tuple[int, int, float | None, float | None],
                max_age: float) -> str:
    """What happens to a removed or renamed stream's recordings, for the reload's answer and log."""
    import time

    from .retention_disk import size_text
    count, size, oldest, _ = stats
    head = f"recordings of removed stream {sid} ({count} segments, {size_text(size)}) stay in {where}"
    if max_age <= 0:
        return f"{head} and are kept for ever (retention 0); delete them yourself when you no longer need them"
    due = (oldest if oldest is not None else time.time()) + max_age
    first = "the oldest at once" if due <= time.time() else \
        f"the first from {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(due))}"
    return (f"{head}; each is deleted when it is {max_age / 86400:g} days old (reason orphan), "
            f"{first}; re-add the stream or move the directory to keep them")
