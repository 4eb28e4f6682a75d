"""The snapshot file: atomic writes, age by mtime, the liveness touch."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from agent import snapshot
from agent.snapshot import SnapshotUnavailable, read, touch, write_atomic

DATA = {"version": 1, "agent": {"pid": 42, "status": "3 live"},
        "streams": [{"id": "lobby", "state": "live", "url": "rtsp://admin:***@cam/"}]}


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_round_trip(tmp_path):
    path = tmp_path / snapshot.SNAPSHOT_NAME
    write_atomic(path, DATA)
    data, age = read(path)
    assert data == DATA
    assert 0.0 <= age < 5.0
    assert listing(tmp_path) == ["state.json"]


def test_snapshot_is_world_readable(tmp_path):
    path = tmp_path / "state.json"
    write_atomic(path, DATA)
    assert path.stat().st_mode & 0o777 == 0o644


def test_rewrite_replaces_the_whole_file(tmp_path):
    path = tmp_path / "state.json"
    write_atomic(path, {"streams": ["x" * 10_000]})
    write_atomic(path, {"streams": []})
    assert read(path)[0] == {"streams": []}
    assert listing(tmp_path) == ["state.json"]


def test_age_comes_from_the_mtime(tmp_path):
    path = tmp_path / "state.json"
    write_atomic(path, DATA)
    os.utime(path, (1_000_000.0, 1_000_000.0))
    assert read(path, now=1_000_007.5) == (DATA, 7.5)


def test_an_age_dated_ahead_of_the_clock_is_reported_not_clamped(tmp_path):
    # Clamped to 0 it read as "fresh" for as long as a backward step; readers judge it instead.
    path = tmp_path / "state.json"
    write_atomic(path, DATA)
    os.utime(path, (1_000_000.0, 1_000_000.0))
    assert read(path, now=999_990.0)[1] == -10.0  # clock stepped back


def test_the_exporter_ages_a_snapshot_that_stays_put_even_when_dated_ahead():
    from exporter.source import judged_age
    assert judged_age(-3600.0, 6.0) == 6.0  # dated an hour ahead, untouched for 6 s: 6 s old
    assert judged_age(7.5, 0.0) == 7.5
    assert judged_age(-0.2, 0.0) == 0.0


def test_vasctl_watches_a_snapshot_dated_ahead_for_a_touch(tmp_path, monkeypatch):
    from agent import vasctl
    path = tmp_path / "state.json"
    write_atomic(path, DATA)
    assert vasctl._judged(path, 2.0) == 2.0
    monkeypatch.setattr(snapshot, "STALE_AFTER", 0.5)
    monkeypatch.setattr(vasctl, "TOUCH_WATCH", 0.5)
    ahead = time.time() + 3600
    os.utime(path, (ahead, ahead))
    assert vasctl._judged(path, -3600.0) >= 1.0  # nobody touches it while watched: stale
    assert not vasctl._fresh(path)
    toucher = threading.Timer(0.3, touch, (path,))
    toucher.start()
    assert vasctl._judged(path, -3600.0) == 0.0  # touched while watched: alive
    toucher.join()


def test_touch_refreshes_the_mtime_but_not_the_content(tmp_path):
    path = tmp_path / "state.json"
    write_atomic(path, DATA)
    before = path.read_bytes()
    os.utime(path, (1_000_000.0, 1_000_000.0))
    touch(path)
    assert path.stat().st_mtime > 1_000_000.0 + 1e6
    assert path.read_bytes() == before
    assert read(path)[1] < 5.0


def test_touch_of_a_missing_snapshot_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        touch(tmp_path / "state.json")


def test_missing_snapshot(tmp_path):
    path = tmp_path / "state.json"
    with pytest.raises(SnapshotUnavailable) as info:
        read(path)
    assert str(info.value) == f"no snapshot at {path}: is vas-agent running with this runtime_dir?"


def test_missing_runtime_dir(tmp_path):
    path = tmp_path / "no-such-dir" / "state.json"
    with pytest.raises(SnapshotUnavailable) as info:
        read(path)
    assert str(info.value).startswith(f"no snapshot at {path}")


def test_corrupt_snapshot(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"version": 1, "streams": [')
    with pytest.raises(SnapshotUnavailable) as info:
        read(path)
    assert str(info.value).startswith(f"agent state unreadable: {path}: Expecting value")


@pytest.mark.parametrize("content", [b"\xff\xfe garbage", b"[" * 100000 + b"]" * 100000])
def test_garbage_and_absurd_nesting_are_unreadable_not_a_crash(tmp_path, content):
    # kill_orphans() reads this at the agent's start: it must never raise anything else.
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(SnapshotUnavailable, match="agent state unreadable"):
        read(path)


def test_snapshot_path_is_a_directory(tmp_path):
    path = tmp_path / "state.json"
    path.mkdir()
    with pytest.raises(SnapshotUnavailable) as info:
        read(path)
    assert str(info.value).startswith(f"cannot read snapshot {path}: ")


def test_failed_write_keeps_the_old_snapshot_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "state.json"
    write_atomic(path, DATA)
    with pytest.raises(TypeError):
        write_atomic(path, {"streams": [object()]})  # not JSON-serializable, midway
    assert read(path)[0] == DATA
    assert listing(tmp_path) == ["state.json"]


def test_write_into_a_missing_directory_fails_cleanly(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "gone" / "state.json", DATA)
    assert listing(tmp_path) == []


def test_readers_never_see_a_partial_file(tmp_path):
    path = tmp_path / "state.json"
    write_atomic(path, {"n": -1, "pad": ""})
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for n in range(200):
                # Sizes vary so a torn read would be caught as invalid JSON or a bad pad.
                write_atomic(path, {"n": n, "pad": "x" * (n * 997 % 50_000)})
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads, last = 0, -1
    try:
        while not done.is_set() or reads < 50:
            data, _ = read(path)  # raises SnapshotUnavailable on a torn file
            if data["n"] >= 0:
                assert data["pad"] == "x" * (data["n"] * 997 % 50_000)
            assert data["n"] >= last  # never goes back to an older snapshot
            last, reads = data["n"], reads + 1
    finally:
        thread.join()
    assert not errors
    assert read(path)[0]["n"] == 199
    assert listing(tmp_path) == ["state.json"]


def test_snapshot_is_compact_json(tmp_path):
    path = tmp_path / "state.json"
    write_atomic(path, DATA)
    assert path.read_text() == json.dumps(DATA, separators=(",", ":"))


@pytest.mark.parametrize("field", ["pid_started_at", "since", "restarts"])
def test_an_integer_no_float_holds_is_unreadable_not_a_crash(tmp_path, field, capsys):
    """JSON has no bound on an integer; every reader computes with floats (``vasctl status``:
    the uptime), where ``10**400`` raised OverflowError instead of naming the file unreadable."""
    from agent import vasctl
    stream = {"id": "cam1", "state": "live", "enabled": True, "restarts": 0, "restart_reasons": {}, field: "BIG"}
    text = json.dumps({**DATA, "streams": [stream]}).replace('"BIG"', "1" + "0" * 400)
    (tmp_path / "state.json").write_text(text)
    with pytest.raises(SnapshotUnavailable, match="agent state unreadable: .*401 digits: no float holds it"):
        read(tmp_path / "state.json")
    assert vasctl.status(tmp_path, as_json=False) == 1
    assert "agent state unreadable" in capsys.readouterr().err
    (tmp_path / "state.json").write_text(text.replace("1" + "0" * 400, "1" + "0" * 308))  # a float holds 1e308
    assert read(tmp_path / "state.json")[0]["streams"][0][field] == 10**308
