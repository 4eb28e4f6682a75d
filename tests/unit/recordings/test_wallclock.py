"""Wall-clock steps (agent/recordings/wallclock.py) and what they mean for retention's ages."""
from __future__ import annotations

from agent.recordings.delete import candidate, is_fresh, keeper, plan_age, plan_size
from agent.recordings.wallclock import ClockSteps

H = 3600.0


class Clocks:
    """An injected wall and monotonic clock."""

    def __init__(self) -> None:
        self.wall, self.mono = 1_000_000.0, 50.0

    def tick(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def make() -> tuple[Clocks, ClockSteps]:
    c = Clocks()
    return c, ClockSteps(wall=lambda: c.wall, mono=lambda: c.mono)


def test_slews_are_not_steps_and_steps_are_recorded_with_their_size():
    c, steps = make()
    for _ in range(100):  # NTP slewing a little every second never adds up to a step
        c.tick(1.0)
        c.wall += 0.01
        assert steps.check() is None
    c.tick(1.0)
    c.wall += 3 * H
    step = steps.check()
    assert step is not None and step.delta == 3 * H and step.before == c.wall - 3 * H
    assert steps.check() is None  # recorded once


def test_a_forward_step_keeps_the_true_age_of_files_written_before_it():
    c, steps = make()
    written = c.wall - 30 * 60  # 30 minutes old
    c.wall += 3 * H  # NTP steps forward by three hours
    steps.check()
    c.tick(10)
    now = c.wall
    assert now - steps.shift(written) == 30 * 60 + 10  # still 30 minutes old, not 3.5 hours
    after = c.wall - 1  # written after the step: already in the new timebase
    assert steps.shift(after) == after
    segs = [candidate("cam1", "", f"s{i}.ts", m, 1) for i, m in enumerate((written, after))]
    assert plan_age(segs, cutoff=now - H, keep=keeper(now=now, newest=None, shift=steps.shift),
                    shift=steps.shift) == []


def test_a_process_that_only_sees_the_step_still_measures_true_ages():
    # Under libfaketime the agent's clock jumps but the kernel dates files in real time:
    # every file, old or new, lands before the step's point and is shifted back into truth.
    c, steps = make()
    real = c.wall
    c.wall += 3 * H
    steps.check()
    assert c.wall - steps.shift(real - 60) == 60
    c.tick(120)  # the kernel dates a file written now at real + 120 s
    assert c.wall - steps.shift(real + 120) == 0
    assert is_fresh(real + 119, c.wall, steps.shift)  # the file being written is still recent


def test_a_backward_step_only_ever_keeps_files_longer():
    c, steps = make()
    old = [c.wall - 50 * 60, c.wall - 10]
    c.wall -= 3 * H
    step = steps.check()
    assert step is not None and step.delta == -3 * H
    now = c.wall
    segs = [candidate("cam1", "", f"s{i}.ts", m, 1) for i, m in enumerate(old)]
    assert plan_age(segs, cutoff=now - H, keep=keeper(now=now, newest=None, shift=steps.shift),
                    shift=steps.shift) == []
    # Dated in the future by hours: no policy takes them until the clock catches up
    # (issue 16, item 8: a future mtime is never judged old).
    assert is_fresh(old[1], now, steps.shift)


def test_many_steps_are_bounded():
    c, steps = make()
    for _ in range(200):
        c.wall += 10
        steps.check()
    assert len(steps.steps) == 64


def step_up_then_back(c: Clocks, steps: ClockSteps) -> None:
    """+1 h, then -1 h ten minutes later (issue 16, item 8)."""
    c.tick(1)
    c.wall += H
    steps.check()
    c.tick(600)
    c.wall -= H
    steps.check()


def test_freshness_never_rests_on_the_shift_estimate_after_a_step_up_and_back():
    c, steps = make()
    step_up_then_back(c, steps)
    now = c.wall
    just_written = now - 1
    assert steps.shift(just_written) > now + H / 2  # the estimate moves it an hour into the future
    assert is_fresh(just_written, now, steps.shift)
    assert is_fresh(now + 30, now, steps.shift)  # dated in the future: never judged old
    segs = [candidate("cam1", "", f"s{i}.ts", m, 1) for i, m in enumerate((now - 3 * H, just_written))]
    keep = keeper(now=now, newest=None, shift=steps.shift)
    assert [s.name for s in plan_size(segs, total=2, max_size=1, keep=keep)] == ["s0.ts"]
