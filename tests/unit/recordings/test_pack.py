"""The packed segment index (issue 21 item 6): cost per upsert flat in the folder's size,
bytes per segment, and every name (the agent's or not) kept exactly and in order."""
from __future__ import annotations

import gc
import heapq
import os
import random
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.recordings import pack as segment_pack
from agent.recordings.delete import candidate, natural_key
from agent.recordings.index import DirSegments, SegmentIndex

SID = "site-0042-building-north-wing-floor-03-corridor-east-camera-0001"  # 64 characters


def fleet_names(n: int, first: int = 0) -> Iterator[tuple[float, int, str]]:
    """The agent's names in fleet mode (agent/supervise/ffmpeg.py + stream.py), a new run every 5000."""
    for i in range(first, first + n):
        run, seq = divmod(i, 5000)
        yield 1e9 + 2.0 * i, 1_000_000 + i, f"{SID}_20261110T{run % 24:02d}0000000Z-e{run + 1}_{seq:06d}.ts"


def reference(entries: list[tuple[float, int, str]]) -> list[tuple[float, int, str]]:
    """What the index must hold: by mtime, equal mtimes in natural name order."""
    return sorted(entries, key=lambda e: (e[0], natural_key(e[2])))


def best_upsert(size: int, tries: int = 300) -> float:
    index = SegmentIndex(None)  # type: ignore[arg-type]
    new = list(fleet_names(tries, first=size))
    index.streams["s"] = {"": DirSegments(fleet_names(size))}
    best = float("inf")
    for mtime, seg_size, name in new:
        t = time.perf_counter()
        index.upsert("s", "", name, mtime, seg_size)
        best = min(best, time.perf_counter() - t)
    assert index.stats("s")[0] == size + tries
    return best


@pytest.mark.slow
def test_an_upsert_costs_the_same_in_a_big_folder():
    """No scan of the whole name blob per upsert (that is 200x slower at 200k than at 1k)."""
    small, big = best_upsert(1000), best_upsert(200_000)
    assert big < 5 * small + 20e-6, (small, big)


@pytest.mark.slow
def test_bytes_per_segment_steady_and_peak_with_64_character_ids():
    """At most 32 B steady (names kept as bytes take 128 B), and no list of tuples at build time
    (400+ B peak)."""
    n = 100_000
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        d = DirSegments(fleet_names(n))  # streamed: the input holds no list
        gc.collect()
        steady, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    steady, peak = (steady - base) / n, (peak - base) / n
    assert len(d) == n and steady <= 32 and peak <= 2 * steady, (steady, peak)


def test_widths_runs_and_odd_names_come_back_exactly():
    odd = ["x_099999.ts", "x_100000.ts", "x_1000000.ts", "x_0.ts", "x_00.ts", "x_1.ts", "x_01.ts",
           "clip.mp4", "clip_7.mp4", "a.m4s", "seg-12.m4s", "no-digits.ts", ".ts", "12345678901234567.ts",
           "x_123456789012.ts", "x_1234567890123.ts", "2026-11-10_12-00-05.mkv", "cam\u0661\u0662.ts",
           "caméra 1.ts", "b\udcff.ts", "v1_part2.ts", "0.ts", "x_5.ts.ts", "x.5.ts"]
    entries = [(float(i % 5), i, n) for i, n in enumerate(odd)]
    d = DirSegments(entries)
    assert list(d.iter()) == reference(entries)
    for _, _, n in entries:
        assert d.find(n)[0] >= 0 and d.find(n + "x")[0] == -1
    assert d.find("x_0999999.ts") == (-1, -1) and d.find("x_99999.ts") == (-1, -1)
    assert d.discard("x_00.ts") and not d.discard("x_00.ts") and d.find("x_0.ts")[0] >= 0


def test_a_run_whose_last_segment_went_frees_its_group_for_the_next_run():
    d = DirSegments()
    for run in range(50):
        d.upsert(f"s_run{run}_000001.ts", float(run), 1)
        d.remove_names({f"s_run{run}_000001.ts"})
    assert len(d) == 0 and len(d.groups) == 1 and d.total == 0
    d.upsert("s_run9_000001.ts", 1.0, 1)
    d.upsert("s_run9_000001.ts", 2.0, 5)  # a rewrite of its run's only segment
    assert list(d.iter()) == [(2.0, 5, "s_run9_000001.ts")] and d.total == 5


def test_big_folders_are_sorted_in_runs_and_merged(monkeypatch):
    monkeypatch.setattr(segment_pack, "CHUNK", 16)
    rng = random.Random(7)
    entries = [(float(rng.randrange(200)), i, f"c_{rng.randrange(10**6):06d}_{i}.ts") for i in range(2000)]
    assert list(DirSegments(entries).iter()) == reference(entries)


def test_a_missing_name_inside_a_runs_bounds_is_found_beyond_the_tail():
    d = DirSegments(fleet_names(5000))
    names = [n for _, _, n in fleet_names(5000)]
    assert d.find(names[10])[0] == 10 and d.discard(names[10]) and d.find(names[10]) == (-1, -1)
    d.upsert(names[10], 0.5, 7)  # back, out of order: first
    assert d.find(names[10])[0] == 0 and next(d.iter()) == (0.5, 7, names[10])


NAMES = st.one_of(st.builds(lambda r, s: f"cam_{r}_{s:06d}.ts", st.integers(0, 3), st.integers(0, 1_200_000)),
                  st.text(st.sampled_from("ab_.0123456789é"), min_size=1, max_size=12).map(lambda t: t + ".ts"))
OPS = st.lists(st.tuples(st.sampled_from(["upsert", "discard", "remove"]), NAMES,
                         st.integers(0, 20).map(float), st.integers(0, 99)), max_size=60)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20).map(float), st.integers(0, 99), NAMES), max_size=30), OPS)
def test_the_packed_folder_behaves_like_a_sorted_list(initial, ops):
    """Against a plain model: same contents, order (ties by bisect, as before) and totals."""
    unique = list({n: (m, z, n) for m, z, n in initial}.values())  # in the order given: the scan's
    model, d = reference(unique), DirSegments(unique)
    for op, name, mtime, size in ops:
        model_names = [n for _, _, n in model]
        if op == "upsert":
            model = [e for e in model if e[2] != name]
            at = sum(1 for e in model if e[0] <= mtime)
            model.insert(at, (mtime, size, name))
            d.upsert(name, mtime, size)
        elif op == "discard":
            assert d.discard(name) == (name in model_names)
            model = [e for e in model if e[2] != name]
        else:
            d.remove_names({name, "gone.ts"})
            model = [e for e in model if e[2] != name]
        assert list(d.iter()) == model and d.total == sum(e[1] for e in model) and len(d) == len(model)
    assert all(d.find(n)[0] == i for i, (_, _, n) in enumerate(model))


@pytest.mark.slow
def test_a_scan_of_a_real_folder_peaks_below_twice_its_steady_size(tmp_path, monkeypatch):
    """The scan packs as it reads (it built a list of (mtime, size, name) per folder first):
    what it holds besides the packed arrays is bounded by CHUNK, made small here so that
    20,000 files show it."""
    monkeypatch.setattr(segment_pack, "CHUNK", 1024, raising=False)
    n, sid = 20_000, "s"
    folder = tmp_path / sid
    folder.mkdir()
    for mtime, _, name in fleet_names(n):
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT, 0o644)
        os.utime(fd, (mtime, mtime))
        os.close(fd)
    index = SegmentIndex(tmp_path)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        index.scan_stream(sid)
        gc.collect()
        steady, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    steady, peak = (steady - base) / n, (peak - base) / n
    assert index.stats(sid)[0] == n and steady <= 32 and peak <= 2 * 32, (steady, peak)
    assert [c.name for c in index.oldest_first(sid)[0]] == [name for _, _, name in fleet_names(n)]


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


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20).map(float), st.integers(0, 99), NAMES), max_size=40), st.data())
def test_removing_several_names_at_once_behaves_like_a_sorted_list(initial, data):
    """Retention's passes remove many names at once, mostly the oldest, some anywhere."""
    unique = list({n: (m, z, n) for m, z, n in initial}.values())
    model, d = reference(unique), DirSegments(unique)
    for _ in range(data.draw(st.integers(1, 6))):
        held = [e[2] for e in model]
        gone = set(data.draw(st.lists(st.sampled_from(held), max_size=len(held)))) if held else set()
        gone |= set(data.draw(st.lists(NAMES, max_size=2)))  # names not held are ignored
        d.remove_names(gone)
        model = [e for e in model if e[2] not in gone]
        assert list(d.iter()) == model and d.total == sum(e[1] for e in model) and len(d) == len(model)
        for mtime, size, name in data.draw(st.lists(st.tuples(st.integers(0, 20).map(float),
                                                              st.integers(0, 99), NAMES), max_size=4)):
            model = [e for e in model if e[2] != name]
            model.insert(sum(1 for e in model if e[0] <= mtime), (mtime, size, name))
            d.upsert(name, mtime, size)
        assert list(d.iter()) == model
    assert all(d.find(n)[0] == i for i, (_, _, n) in enumerate(model))


@pytest.mark.parametrize("batch", [1, 10, 40])
def test_retentions_steady_state_never_moves_the_arrays(batch):
    """Oldest segments deleted as new ones come: the three arrays keep their memory blocks.
    A new block per pass (made on whichever thread ran it) spread the index over glibc's
    arenas and fragmented them: the agent's RSS grew ~1 MiB/h in a 2-hour soak."""
    d = DirSegments((float(i), 10, f"cam_1700_{i:06d}.ts") for i in range(1100))
    blocks, moved = None, 0
    for cycle in range(200):
        first = 1100 + cycle * batch
        for q in range(first, first + batch):
            d.upsert(f"cam_1700_{q:06d}.ts", float(q), 10)
        d.remove_names({f"cam_1700_{q:06d}.ts" for q in range(cycle * batch, (cycle + 1) * batch)})
        now = [a.buffer_info()[0] for a in (d.mtimes, d.sizes, d.keys)]
        moved += blocks is not None and now != blocks  # the first cycle may grow them once
        blocks = now
    assert moved == 0
    assert len(d) == 1100 and d.total == 11000 and d.names()[0] == f"cam_1700_{200 * batch:06d}.ts"
    assert list(d.mtimes) == [float(q) for q in range(200 * batch, 200 * batch + 1100)]


def test_a_folder_that_shrank_for_good_gives_its_memory_back():
    d = DirSegments((float(i), 10, f"cam_1700_{i:06d}.ts") for i in range(10_000))
    before = d.keys.__sizeof__()
    d.remove_names({f"cam_1700_{i:06d}.ts" for i in range(8_000)})
    assert d.keys.__sizeof__() < before / 2 and len(d) == 2_000
    assert d.names() == [f"cam_1700_{i:06d}.ts" for i in range(8_000, 10_000)]
