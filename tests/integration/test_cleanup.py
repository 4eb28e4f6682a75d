"""`vasctl cleanup`: retention applied on demand, safely."""
from __future__ import annotations

import os
import time

import pytest

from .harness import config, wait_for

pytestmark = pytest.mark.integration
DAY = 86400


@pytest.mark.slow
def test_cleanup_deletes_only_old_segments_of_the_stream(rtsp_camera, agent_factory, tmp_path):
    agent = agent_factory(config({"cam1": {"url": rtsp_camera.url("cam1"), "recording": {"retention": "30d"}}}))
    seg_dir = agent.recordings / "cam1"
    seg_dir.mkdir(parents=True)
    old = time.time() - 3 * DAY
    planted = {
        "cam1_20200101T000000000Z_000001.ts": True,    # old segment: goes
        "cam1_20200101T000000000Z_000002.ts": True,
        "notes.txt": False,                              # not a segment
        "cam2_20200101T000000000Z_000001.ts": True,     # any media file under cam1/ is cam1's
        "cam1_20200101T000000000Z_000003.ts.tmp": False,  # being written
    }
    for name in planted:
        (seg_dir / name).write_bytes(b"x" * 1000)
        os.utime(seg_dir / name, (old, old))
    outside = tmp_path / "precious_20200101T000000000Z_000001.ts"
    outside.write_bytes(b"keep")
    os.utime(outside, (old, old))
    (seg_dir / "cam1_20200101T000000000Z_000004.ts").symlink_to(outside)  # symlink: never followed

    agent.start()
    wait_for(lambda: len(agent.segments("cam1")) >= 7, 30, "fresh segments")  # 4 planted + 3 fresh
    dry = agent.vasctl("cleanup", "--dry-run", "--retention-days", "1")  # 30d: retention itself keeps them
    assert dry.returncode == 0 and "cam1: would delete 3 segments" in dry.stdout
    assert all((seg_dir / n).exists() for n in planted)
    done = agent.vasctl("cleanup", "cam1", "--retention-days", "1")
    assert done.returncode == 0 and "cam1: deleted 3 segments" in done.stdout
    for name, goes in planted.items():
        assert (seg_dir / name).exists() != goes, name
    assert outside.read_bytes() == b"keep" and (seg_dir / "cam1_20200101T000000000Z_000004.ts").is_symlink()
    assert len(agent.segments("cam1")) >= 4, "fresh segments are kept"
    assert agent.vasctl("cleanup", "nope").returncode == 1


def test_cleanup_refuses_a_symlinked_stream_directory(rtsp_camera, agent_factory, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    old = time.time() - 3 * DAY
    for i in (1, 2):
        f = elsewhere / f"cam1_20200101T000000000Z_00000{i}.ts"
        f.write_bytes(b"x")
        os.utime(f, (old, old))
    agent = agent_factory(config({"off": {"url": rtsp_camera.url("cam1"), "enabled": False}}))
    agent.recordings.mkdir()
    (agent.recordings / "off").symlink_to(elsewhere)
    for f in elsewhere.iterdir():
        f.rename(elsewhere / f.name.replace("cam1", "off"))
    agent.start()
    res = agent.vasctl("cleanup", "off")
    assert res.returncode == 1 and "not a plain directory" in res.stderr
    assert len(list(elsewhere.iterdir())) == 2


@pytest.mark.slow
def test_cleanup_json_contract_and_status_figures(rtsp_camera, agent_factory):
    import json
    agent = agent_factory(config({"cam1": {"url": rtsp_camera.url("cam1"), "recording": {"retention": "30d"}}}))
    old = time.time() - 3 * DAY
    for i in range(3):
        seg = agent.recordings / "cam1" / "2020-01-01" / f"clip{i}.mp4"
        seg.parent.mkdir(parents=True, exist_ok=True)
        seg.write_bytes(b"x" * 2**20)
        os.utime(seg, (old + i, old + i))
    agent.start()
    # Fresh segments first: until FFmpeg wrote one, clip2 is the running stream's newest (kept).
    wait_for(lambda: agent.streams()["cam1"]["recording"].get("segment_count", 0) >= 5, 30, "indexed")
    res = agent.vasctl("cleanup", "--retention-days", "2", "--dry-run", "--json")
    body = json.loads(res.stdout)
    assert body["ok"] and body["dry_run"] is True and body["retention_days"] == 2
    assert body["deleted_count"] == 3 and body["deleted_size_mb"] == 3.0 and body["cutoff_time"].endswith("Z")
    one = body["streams"]["cam1"]
    assert {"stream_id", "retention_days", "deleted_count", "deleted_size_mb", "cutoff_time"} <= set(one)
    assert one["files"] == [f"2020-01-01/clip{i}.mp4" for i in range(3)]
    real = json.loads(agent.vasctl("cleanup", "cam1", "--retention-days", "2", "--json").stdout)
    assert real["files"] == one["files"] and not (agent.recordings / "cam1" / "2020-01-01").exists()
    assert agent.vasctl("cleanup", "--retention-days", "-1").returncode == 1
    snap = wait_for(lambda: (s := agent.snapshot())["streams"][0]["recording"].get("deleted", {}).get("manual") and s,
                    15, "manual deletions in the snapshot")
    assert snap["streams"][0]["recording"]["deleted"]["manual"] == {"segments": 3, "bytes": 3 * 2**20}
    fs = snap["recordings"]["filesystem"]
    assert set(fs) == {"total_bytes", "used_bytes", "free_bytes", "used_percent"} and fs["total_bytes"] > 0
    table = agent.vasctl("status").stdout
    assert "REC" in table.splitlines()[0] and "OLDEST" in table.splitlines()[0]
