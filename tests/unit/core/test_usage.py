"""What ``vasctl status`` measures: sizes for people, CPU between two samples of one process."""
from __future__ import annotations

import pytest

from agent.usage import cpu_percent, human_bytes


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 512, 512_000, 1536 * 1024, 12 * 2**30, 2**50 * 3000)] == \
        ["0B", "512B", "500KiB", "1.5MiB", "12GiB", "3000PiB"]


def test_cpu_percent_between_samples_of_one_process():
    assert cpu_percent((7, 1.0, 10.0, 100.0), (7, 1.0, 10.37, 101.0)) == pytest.approx(37.0)
    assert cpu_percent((7, 1.0, 10.0, 100.0), (7, 2.0, 10.5, 101.0)) is None  # PID reused: another process
