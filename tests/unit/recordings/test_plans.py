"""Retention's pure parts: what a segment is, the planners' choice and order, the packed index."""
from __future__ import annotations

import heapq

from agent.recordings.delete import candidate, is_segment_name, keeper, natural_key, plan_age, plan_free, plan_size
from agent.recordings.index import DirSegments

NOW = 1_000_000.0


def segs(stream: str, *spec: tuple[float, int], dir_rel: str = "") -> list:
    """Candidates named by their age in seconds, oldest first."""
    out = [candidate(stream, dir_rel, f"{stream}_{int(age)}.ts", NOW - age, size) for age, size in spec]
    return sorted(out)


def names(plan: list) -> list[str]:
    return [c.name for c in plan]


def keep_none(c) -> bool:
    return False


def test_what_is_a_segment():
    for name in ("a.ts", "x_1000000.ts", "clip.m4s", "rec.mp4", "2024-01-01.mkv"):
        assert is_segment_name(name), name
    for name in ("index.m3u8", "a.ts.tmp", "index.m3u8.tmp", "notes.txt", "a.TS.bak", ".hidden.ts", "init.mp4a"):
        assert not is_segment_name(name), name


def test_numbers_in_names_compare_as_numbers():
    assert natural_key("cam_20200101_999999.ts") < natural_key("cam_20200101_1000000.ts")
    same = [candidate("s", "", n, NOW, 1) for n in ("c_1000001.ts", "c_999999.ts", "c_1000000.ts")]
    assert names(sorted(same)) == ["c_999999.ts", "c_1000000.ts", "c_1000001.ts"]


def test_age_takes_expired_oldest_first_and_stops_at_the_cutoff():
    s = segs("a", (500, 1), (400, 1), (300, 1), (10, 1))
    assert names(plan_age(s, cutoff=NOW - 350, keep=keep_none)) == ["a_500.ts", "a_400.ts"]
    assert plan_age(s, cutoff=NOW - 1000, keep=keep_none) == []


def test_the_newest_and_recent_files_are_never_taken():
    s = segs("a", (500, 1), (400, 1), (3, 1))
    keep = keeper(now=NOW, newest=s[1])  # the running stream's newest (here by construction)
    assert names(plan_age(s, cutoff=NOW, keep=keep)) == ["a_500.ts"]  # 400 newest, 3 recent
    assert names(plan_age(s, cutoff=NOW, keep=keeper(now=NOW, newest=None))) == ["a_500.ts", "a_400.ts"]


def test_size_cap_takes_oldest_until_under_the_cap():
    s = segs("a", (500, 100), (400, 100), (300, 100), (200, 100))
    assert names(plan_size(s, total=400, max_size=250, keep=keep_none)) == ["a_500.ts", "a_400.ts"]
    assert plan_size(s, total=400, max_size=400, keep=keep_none) == []
    assert plan_size(s, total=400, max_size=0, keep=keep_none) == []  # 0: no cap


def test_free_space_takes_the_oldest_across_streams():
    a = segs("a", (500, 100), (300, 100), (100, 100))
    b = segs("b", (400, 100), (200, 100), dir_rel="2020/01")
    plan = plan_free([a, b], need=250, keep=keep_none)
    assert [(c.stream, c.name) for c in plan] == [("a", "a_500.ts"), ("b", "b_400.ts"), ("a", "a_300.ts")]
    assert plan_free([a, b], need=0, keep=keep_none) == []
    kept = plan_free([a, b], need=150, keep=lambda c: c.stream == "a")
    assert names(kept) == ["b_400.ts", "b_200.ts"]


def test_packed_directory_keeps_order_and_totals():
    d = DirSegments([(30.0, 3, "c.ts"), (10.0, 1, "a.ts"), (20.0, 2, "b.ts")])
    assert list(d.iter()) == [(10.0, 1, "a.ts"), (20.0, 2, "b.ts"), (30.0, 3, "c.ts")] and d.total == 6
    d.upsert("d.ts", 25.0, 4)          # out of order: lands in place
    d.upsert("a.ts", 40.0, 5)          # rewritten: moves to the end with its new size
    assert [n for _, _, n in d.iter()] == ["b.ts", "d.ts", "c.ts", "a.ts"] and d.total == 14
    assert d.discard("d.ts") and not d.discard("nope.ts") and d.total == 10
    d.remove_names({"b.ts", "c.ts"})
    assert list(d.iter()) == [(40.0, 5, "a.ts")] and d.total == 5 and len(d) == 1
    assert d.find("a.ts")[0] == 0 and d.find("b.ts") == (-1, -1)


def test_packed_directory_merges_oldest_first_like_the_planner_expects():
    one = DirSegments([(float(i), 1, f"x_{i}.ts") for i in range(0, 100, 2)])
    two = DirSegments([(float(i), 1, f"y_{i}.ts") for i in range(1, 100, 2)])
    merged = heapq.merge(*[(candidate("s", d, n, m, z) for m, z, n in x.iter()) for d, x in (("1", one), ("2", two))])
    assert [c.mtime for c in merged] == [float(i) for i in range(100)]


def test_unicode_and_odd_names_survive_packing():
    d = DirSegments([(1.0, 1, "caméra 1.ts"), (2.0, 1, "b\udcff.ts")])
    assert [n for _, _, n in d.iter()] == ["caméra 1.ts", "b\udcff.ts"]
    assert d.discard("caméra 1.ts") and len(d) == 1


def _load(tmp_path, text: str):
    path = tmp_path / "streams.yaml"
    path.write_text(text)
    from agent.config.loader import load
    return load(path)


def test_retention_keys_and_their_errors(tmp_path):
    import pytest

    from agent.config import model as C
    cfg = _load(tmp_path, "version: 1\nrecordings: {min_free: 20GiB, min_free_hysteresis: 2%, sweep_interval: 5m,"
                          " orphan_retention: 0}\ndefaults: {recording: {max_size: 50GiB}}\n"
                          "streams: {a: {url: 'rtsp://h/', recording: {max_size: null}}, b: {url: 'rtsp://h/'}}\n")
    assert cfg.recordings == C.RecordingsConfig(sweep_interval=300.0, min_free=C.SpaceAmount(bytes=20 << 30),
                                                min_free_hysteresis=C.SpaceAmount(percent=2.0), orphan_retention=0.0)
    assert cfg.streams["a"].recording.max_size == 0 and cfg.streams["b"].recording.max_size == 50 << 30
    with pytest.raises(C.ConfigError) as err:
        _load(tmp_path, "version: 1\nrecordings:\n  min_free: 95%\nstreams:\n  a:\n    url: 'rtsp://h/'\n"
                        "    recording: {max_size: 0}\n")
    assert f"{tmp_path / 'streams.yaml'}:3: recordings.min_free: expected a percentage" in str(err.value)
    assert "'95%'" in str(err.value)
    assert f"{tmp_path / 'streams.yaml'}:7: streams.a.recording.max_size: expected a size like 50GiB" in str(err.value)


def test_a_changed_retention_or_cap_keeps_the_process(tmp_path):
    from agent.reload import plan_reload
    old = _load(tmp_path, "version: 1\nstreams: {a: {url: 'rtsp://h/'}}\n")
    new = _load(tmp_path, "version: 1\nrecordings: {min_free: 1GiB}\n"
                          "streams: {a: {url: 'rtsp://h/', recording: {retention: 1d, max_size: 1GiB}}}\n")
    plan = plan_reload(old, new)
    assert plan.update == ("a",) and plan.restart == ()
