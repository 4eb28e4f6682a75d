"""Retention's pure parts: what a segment is, the planners' choice and order."""
from __future__ import annotations

from agent.recordings.delete import candidate, is_segment_name, keeper, natural_key, plan_age, plan_free, plan_size

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


def test_only_a_big_pass_over_several_streams_is_spread_over_threads():
    """A full disk's floor deletes a few segments as each new one lands: spread over 8 threads
    every time, they filled each thread's malloc cache.  A cleanup or a burst still fans out."""
    from agent.recordings.service import PARALLEL_DELETE_MIN, fans_out
    assert not fans_out(20, 20)  # the floor's steady state: a segment or so of each stream
    assert not fans_out(1, 10_000)  # one stream's files go oldest first on one thread anyway
    assert fans_out(2, PARALLEL_DELETE_MIN) and fans_out(20, 30_000)
