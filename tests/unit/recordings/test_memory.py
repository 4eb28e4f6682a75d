"""The remembered retention of removed streams: an orphan keeps at least its stream's retention."""
from __future__ import annotations

from pathlib import Path

from agent.recordings.memory import orphan_max_age, orphan_note

GiB = 1 << 30


def test_an_orphan_keeps_at_least_its_streams_retention():
    day = 86400.0
    assert orphan_max_age(0.0, 7 * day) == 0.0              # kept for ever stays kept for ever
    assert orphan_max_age(30 * day, 7 * day) == 30 * day
    assert orphan_max_age(1 * day, 7 * day) == 7 * day
    assert orphan_max_age(None, 7 * day) == 7 * day         # never configured: the orphan default
    assert orphan_max_age(30 * day, 0.0) == 0.0
    assert "the oldest at once" in orphan_note("hall", Path("/rec/hall"), (2, 3 * GiB, 0.0, 1.0), 15 * day)
    note = orphan_note("hall", Path("/rec/hall"), (2, 3 * GiB, 4e9, 4e9), 15 * day)
    assert note.startswith("recordings of removed stream hall (2 segments, 3.0GiB) stay in /rec/hall; each is "
                           "deleted when it is 15 days old (reason orphan), the first from 2096-10-17 07:06 UTC")
