"""The free-space floor, pure: an unreachable floor, and the newest hour kept unless the disk is about to be full."""
from __future__ import annotations

from agent.config.model import RecordingsConfig, SpaceAmount
from agent.recordings.delete import candidate
from agent.recordings.disk import Filesystem, emergency_free, floor_of, floor_problem, plan_relief
from agent.recordings.wallclock import same

NOW = 10_000_000.0
GiB = 1 << 30


def seg(stream: str, name: str, age: float, size: int = 100, dir_rel: str = ""):
    return candidate(stream, dir_rel, name, NOW - age, size)


def fs(total: int, free: int, floor: int, target: int) -> Filesystem:
    return Filesystem(1, "/rec", total, free, floor, target, False)


def never(c) -> bool:
    return False


def test_an_unreachable_floor_falls_back_to_the_emergency_floor():
    rec = RecordingsConfig(min_free=SpaceAmount(bytes=100 * GiB), min_free_hysteresis=SpaceAmount(percent=5.0))
    assert floor_of(rec, 24 * GiB) == (emergency_free(24 * GiB), 2 * emergency_free(24 * GiB), True)
    assert floor_of(rec, 200 * GiB) == (100 * GiB, 110 * GiB, False)
    assert floor_of(RecordingsConfig(min_free=SpaceAmount(percent=90.0), min_free_hysteresis=SpaceAmount(percent=15.0)),
                    GiB)[2], "90% + 15% can never be reached either"
    assert "can never be reached" in (floor_problem(rec, 24 * GiB, "/rec") or "")
    ext4 = RecordingsConfig(min_free=SpaceAmount(percent=90.0), min_free_hysteresis=SpaceAmount(percent=6.0))
    assert not floor_of(ext4, 100 * GiB)[2] and floor_of(ext4, 100 * GiB, usable=95 * GiB)[2]  # 5 % reserved
    assert "(100.0GiB, 5.0GiB of it reserved for root)" in (floor_problem(ext4, 100 * GiB, "/rec", 95 * GiB) or "")
    assert floor_problem(rec, 200 * GiB, "/rec") is None
    assert emergency_free(24 * GiB) == 24 * GiB // 100 and emergency_free(10_000 * GiB) == GiB


def test_the_floor_keeps_the_last_hour_unless_about_to_be_full():
    streams = [[seg("a", "old", 7200), seg("a", "young1", 1800), seg("a", "young2", 600)]]
    calm = fs(100 * GiB, 5 * GiB, 10 * GiB, 15 * GiB)
    assert [c.name for c in plan_relief(calm, lambda: streams, now=NOW, planned=0, keep=never, shift=same)] == ["old"]
    full = Filesystem(1, "/rec", 10_000, 50, 1000, 1500, False)           # emergency: < 100 bytes free
    taken = plan_relief(full, lambda: streams, now=NOW, planned=0, keep=never, shift=same)
    assert [c.name for c in taken] == ["old", "young1"]                    # back to 2 x 100 free, no further
    kept = plan_relief(full, lambda: streams, now=NOW, planned=0, keep=lambda c: c.name != "old", shift=same)
    assert kept[0].name == "old"
