"""``vas_recording_newest_segment_timestamp_seconds``: when a live stream's recording last
produced a segment, so that a recording that stopped while RTP goes on can be alerted on
(config/prometheus/alerts.yml, ``VasRecordingStopped``)."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from exporter.metrics import Metrics
from exporter.recordings import RecordingStats, scan_stream
from exporter.source import View

from .conftest import snapshot_dict, stream

NEWEST = "vas_recording_newest_segment_timestamp_seconds"


def newest_samples(text: str) -> dict[str, float]:
    """The family's samples by stream, as Prometheus reads the page (the family must be there)."""
    for family in text_string_to_metric_families(text):
        if family.name == NEWEST:
            assert family.type == "gauge" and family.documentation == "mtime of the newest segment."
            return {s.labels["stream"]: s.value for s in family.samples}
    raise AssertionError(f"no {NEWEST} family")


def recording(**figures: object) -> dict[str, object]:
    return {"recording": {"enabled": True, "segment_duration_seconds": 10.0, "retention_seconds": 604800.0,
                          **figures}}


async def test_a_stream_with_a_newest_segment_has_a_sample_and_one_without_has_none(client, node, tmp_path):
    """The agent's index names it (cam1); an empty index (null), an older agent's snapshot
    without the key, and recording disabled (its old footage still indexed; or no figures and
    no folder for the fallback scan) give no sample: a missing series, not a 0 that would read
    as "stopped in 1970", nor old footage that would read as a stop."""
    now = time.time()
    node.write(snapshot_dict([
        stream("cam1", **recording(segment_count=3, total_bytes=300, oldest_segment_at=now - 60,
                                   newest_segment_at=now - 2.5)),
        stream("cam2", **recording(segment_count=0, total_bytes=0, oldest_segment_at=None, newest_segment_at=None)),
        stream("cam3", **recording(segment_count=5, total_bytes=500, oldest_segment_at=now - 60)),
        stream("cam4", recording={"enabled": False}),
        stream("cam5", recording={"enabled": False, "segment_count": 2, "total_bytes": 200,
                                  "oldest_segment_at": now - 90, "newest_segment_at": now - 80})],
        root=str(tmp_path)))
    text = await (await client.get("/v2/metrics")).text()
    assert newest_samples(text) == {"cam1": now - 2.5}
    oldest = [line for line in text.splitlines() if line.startswith("vas_recording_oldest_segment_timestamp_seconds{")]
    assert [line.split('"')[1] for line in oldest] == ["cam1", "cam3", "cam5"]  # the neighbour is unchanged


async def test_no_stream_with_a_newest_segment_leaves_the_family_without_samples(client, node, tmp_path):
    node.write(snapshot_dict([stream("cam1", recording={"enabled": False})], root=str(tmp_path)))
    assert newest_samples(await (await client.get("/v2/metrics")).text()) == {}


def _segment(path: Path, mtime: float, size: int = 188) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x47" * size)
    os.utime(path, (mtime, mtime))


def test_the_fallback_scan_finds_the_newest_segment(tmp_path):
    """Without the agent's index the exporter's own walk gives it: the newest media file in any
    date folder; a newer file that is no segment, or a symlink, does not count."""
    cam = tmp_path / "cam1"
    _segment(cam / "2025-01-01" / "a.ts", 1_000.0)
    _segment(cam / "2025-01-02" / "b.m4s", 2_000.25)
    _segment(cam / "notes.txt", 9_000.0)
    (cam / "link.ts").symlink_to(cam / "2025-01-02" / "b.m4s")
    os.utime(cam / "link.ts", (9_500.0, 9_500.0), follow_symlinks=False)
    assert scan_stream(cam) == (2, 376, 1_000.0, 2_000.25)
    assert scan_stream(tmp_path / "nothing") == (0, 0, None, None)


async def test_a_scanned_stream_gets_its_newest_segment_on_the_page(tmp_path):
    """The fallback figures reach the metric as the index's do (the snapshot has no counts);
    a stream not recording has its footage counted, but no newest segment."""
    _segment(tmp_path / "cam1" / "x.ts", 1_700_000_000.5)
    _segment(tmp_path / "off" / "y.ts", 1_700_000_000.0)
    data = snapshot_dict([stream("cam1"), stream("cam2"), stream("off", recording={"enabled": False})],
                         root=str(tmp_path))
    stats, scanned = RecordingStats(), asyncio.Event()
    task = asyncio.create_task(stats.run(lambda: View(data, 0.5, 1), scanned.set))
    try:
        await asyncio.wait_for(scanned.wait(), 10)
    finally:
        task.cancel()
    text = Metrics(stats).render(View(data, 0.5, 1), stale_after=5).decode()
    assert newest_samples(text) == {"cam1": 1_700_000_000.5}
    assert 'vas_recording_segments{stream="off"} 1.0' in text


async def test_a_verbatim_stream_has_no_segment_duration(client, node, tmp_path):
    """``recording.segment_duration`` (and ``enabled``) do not apply to a ``command:`` stream
    (docs/configuration.md): the command records as it likes, or not at all.  Without the gauge
    VasRecordingStopped does not judge it, as it cannot know its segment length; a command that
    only sends RTP would otherwise read as a live stream that records nothing."""
    now = time.time()
    node.write(snapshot_dict([
        stream("cam1", **recording(segment_count=3, total_bytes=300, oldest_segment_at=now - 60,
                                   newest_segment_at=now - 2.5)),
        stream("own", mode="command", **recording(segment_count=0, total_bytes=0, newest_segment_at=None)),
        stream("ownrec", mode="command", **recording(segment_count=2, total_bytes=200, oldest_segment_at=now - 600,
                                                     newest_segment_at=now - 300))],
        root=str(tmp_path)))
    text = await (await client.get("/v2/metrics")).text()
    lengths = [line.split('"')[1] for line in text.splitlines()
               if line.startswith("vas_recording_segment_duration_seconds{")]
    assert lengths == ["cam1"]
    assert newest_samples(text) == {"cam1": now - 2.5, "ownrec": now - 300}  # its footage is still told
