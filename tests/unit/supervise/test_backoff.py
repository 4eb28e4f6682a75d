"""The restart-delay policy, including a fake-clock simulation of a camera outage."""
from __future__ import annotations

import random
import time

import pytest

from agent.config.model import RestartPolicy
from agent.supervise.backoff import next_attempt, restart_delay

POLICY = RestartPolicy()  # 1s, x2, 60s cap, 20% jitter, stable after 60s
ALMOST_ONE = 1.0 - 1e-12


def delays(policy: RestartPolicy, count: int, rand: float) -> list[float]:
    return [restart_delay(policy, n, rand=rand) for n in range(1, count + 1)]


def test_schedule_without_jitter_doubles_then_caps():
    assert delays(POLICY, 10, 0.5) == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]


def test_schedule_at_the_bottom_of_the_jitter():
    assert delays(POLICY, 8, 0.0) == pytest.approx([0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 48, 48])


def test_schedule_at_the_top_of_the_jitter_never_exceeds_the_cap():
    assert delays(POLICY, 8, ALMOST_ONE) == pytest.approx([1.2, 2.4, 4.8, 9.6, 19.2, 38.4, 60, 60])


def test_cap_that_is_not_a_power_of_the_multiplier():
    policy = RestartPolicy(initial_delay=1, multiplier=3, max_delay=100, jitter=0)
    assert delays(policy, 7, 0.5) == [1, 3, 9, 27, 81, 100, 100]


def test_zero_jitter_ignores_rand():
    policy = RestartPolicy(jitter=0)
    for r in (0.0, 0.3, ALMOST_ONE):
        assert delays(policy, 8, r) == [1, 2, 4, 8, 16, 32, 60, 60]


@pytest.mark.parametrize("jitter", [0.0, 0.1, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 6, 7, 8, 50])
def test_jitter_bounds(jitter, attempt):
    policy = RestartPolicy(jitter=jitter)
    base = min(2.0 ** (attempt - 1), policy.max_delay)
    rng = random.Random(attempt * 1000 + int(jitter * 10))
    for r in [0.0, 0.5, ALMOST_ONE] + [rng.random() for _ in range(200)]:
        d = restart_delay(policy, attempt, rand=r)
        assert base * (1 - jitter) - 1e-9 <= d <= min(policy.max_delay, base * (1 + jitter)) + 1e-9
        assert 0.0 <= d <= policy.max_delay


def test_unpinned_rand_stays_in_bounds():
    for attempt in range(1, 40):
        d = restart_delay(POLICY, attempt)
        assert 0.0 <= d <= POLICY.max_delay


@pytest.mark.parametrize("attempt", [10_000, 10**6])
def test_huge_attempt_numbers_do_not_overflow(attempt):
    assert restart_delay(POLICY, attempt, rand=0.5) == 60.0
    big = RestartPolicy(initial_delay=1, multiplier=100, max_delay=86400, jitter=0.2)
    assert restart_delay(big, attempt, rand=ALMOST_ONE) == 86400.0


def test_extreme_policies_never_overflow():
    policy = RestartPolicy(initial_delay=1e-300, max_delay=1e10, jitter=0.2)
    for attempt in (1, 1024, 1025, 5000, 10**7):
        assert 0 <= restart_delay(policy, attempt, rand=0.5) <= policy.max_delay
    assert restart_delay(RestartPolicy(max_delay=float("inf")), 3, rand=0.5) < float("inf")


@pytest.mark.parametrize("multiplier", [1.0, 1.0000001])
def test_cost_does_not_grow_with_the_attempt_number(multiplier):
    # With a multiplier of (almost) 1 the base never reaches the cap, so a loop over
    # attempts would run once per past failure: a camera down for a year at 1 s
    # retries is ~3e7 attempts, computed on the event loop at every restart.
    policy = RestartPolicy(initial_delay=1, multiplier=multiplier, max_delay=60, jitter=0)
    started = time.process_time()  # CPU time: a preemption by another process is no cost of ours
    delay = restart_delay(policy, 10**7, rand=0.5)
    elapsed = time.process_time() - started
    assert 1.0 <= delay <= 60.0
    assert elapsed < 0.05, f"restart_delay took {elapsed:.2f}s for attempt 10**7"


def test_attempt_counts_from_one():
    with pytest.raises(ValueError):
        restart_delay(POLICY, 0, rand=0.5)


def test_next_attempt_resets_only_after_a_stable_run():
    assert next_attempt(POLICY, 5, uptime=0.0) == 6
    assert next_attempt(POLICY, 5, uptime=59.999) == 6
    assert next_attempt(POLICY, 5, uptime=60.0) == 1
    assert next_attempt(POLICY, 5, uptime=3600.0) == 1
    assert next_attempt(RestartPolicy(stable_after=0), 9, uptime=0.0) == 1


# -- a camera outage on a fake clock ----------------------------------------------------

class FakeClock:
    """Seconds since the simulation started; only ``advance`` moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


class Camera:
    """Down during [down_from, down_until); a run while down fails after ``fail_after`` s."""

    def __init__(self, down_from: float, down_until: float, fail_after: float = 0.5) -> None:
        self.down_from, self.down_until, self.fail_after = down_from, down_until, fail_after

    def run(self, clock: FakeClock, max_run: float) -> float:
        """Run FFmpeg against the camera from ``clock.now``; returns the run's uptime."""
        if self.down_from <= clock.now < self.down_until:
            uptime = self.fail_after
        elif clock.now < self.down_from:
            uptime = min(max_run, self.down_from - clock.now)
        else:
            uptime = max_run
        clock.advance(uptime)
        return uptime


def simulate(policy: RestartPolicy, camera: Camera, until: float, rand) -> list[tuple[float, float, int]]:
    """The supervision loop in miniature (as agent/supervise/stream.py drives the policy).

    Returns (spawn time, uptime, attempt) per run; the first run is attempt 0.
    """
    clock, attempt, runs = FakeClock(), 0, []
    while clock.now < until:
        spawned = clock.now
        uptime = camera.run(clock, max_run=until - clock.now)
        runs.append((spawned, uptime, attempt))
        if clock.now >= until:
            break
        attempt = next_attempt(policy, attempt, uptime)
        clock.advance(restart_delay(policy, attempt, rand=rand()))
    return runs


def test_outage_of_ten_minutes_retries_with_growing_delays_then_at_the_cap():
    policy = RestartPolicy(jitter=0.0)
    camera = Camera(down_from=0.0, down_until=600.0)
    runs = simulate(policy, camera, until=1200.0, rand=lambda: 0.5)
    down = [r for r in runs if r[0] < 600.0]
    gaps = [b[0] - (a[0] + a[1]) for a, b in zip(down, down[1:])]
    assert gaps[:7] == [1, 2, 4, 8, 16, 32, 60]
    assert all(g == 60 for g in gaps[7:])
    # Never gives up: retries keep coming at the cap for the whole outage, and
    # the camera is picked up within one capped delay of coming back.
    assert len(down) == 15 and down[-1][2] == 14
    assert 600.0 - down[-1][0] <= policy.max_delay + camera.fail_after
    first_up = next(r for r in runs if r[0] >= 600.0)
    assert first_up[0] - 600.0 <= policy.max_delay
    assert first_up[1] == 1200.0 - first_up[0]  # and it stays up to the end


def test_outage_with_random_jitter_never_waits_longer_than_the_cap():
    policy = RestartPolicy()
    rng = random.Random(1234)
    camera = Camera(down_from=0.0, down_until=600.0)
    runs = simulate(policy, camera, until=900.0, rand=rng.random)
    gaps = [b[0] - (a[0] + a[1]) for a, b in zip(runs, runs[1:])]
    assert all(0 < g <= policy.max_delay for g in gaps)
    assert max(gaps) >= policy.max_delay * (1 - policy.jitter)  # it did reach the cap
    assert any(spawned >= 600.0 for spawned, _, _ in runs)
    assert [a for _, _, a in runs] == list(range(len(runs)))  # never reset while failing


def test_a_stable_run_resets_the_schedule():
    policy = RestartPolicy(jitter=0.0, stable_after=60.0)
    # Up for 5 minutes, down for 10, up again: the outage starts from attempt 1.
    camera = Camera(down_from=300.0, down_until=900.0)
    runs = simulate(policy, camera, until=400.0, rand=lambda: 0.5)
    assert runs[0] == (0.0, 300.0, 0)
    # Restart after the stable run waits initial_delay again, not the cap.
    assert runs[1][0] == 301.0 and runs[1][2] == 1
    assert runs[2][0] == runs[1][0] + 0.5 + 2.0 and runs[2][2] == 2
    assert runs[3][0] == runs[2][0] + 0.5 + 4.0 and runs[3][2] == 3
