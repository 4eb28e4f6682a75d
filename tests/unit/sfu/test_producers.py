"""The producer poll's repair decision: a producer is re-created only when the running FFmpeg
reports progress and the SFU counts nothing, never for the silent start of a restarted run."""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from agent.sfu.producers import REPAIR_AFTER_POLLS, Producer, ProducerManager

TARGET = object()  # the producer's RTP target, as the stream's running FFmpeg sends to it


class FakeStream:
    """The fields of a Stream the poll reads (pure logic: no process, no SFU)."""

    def __init__(self) -> None:
        self.cfg = SimpleNamespace(reports_progress=True)
        self.child: Any = None
        self.rtp_running: Any = None
        self.last_progress_at: float | None = None  # wall clock
        self.progressed_at: float | None = None  # monotonic
        self.confirmed: list[bool] = []

    def spawn(self, at: float, wall_step: float = 0.0) -> None:
        """A run started at monotonic ``at``; its wall clock is ``wall_step`` off the monotonic one."""
        self.child = SimpleNamespace(started_at=at, wall_started_at=at + wall_step)
        self.rtp_running = TARGET

    def report(self, at: float, wall_step: float = 0.0) -> None:
        """FFmpeg's progress advanced at monotonic ``at``."""
        self.progressed_at, self.last_progress_at = at, at + wall_step

    def exit(self) -> None:
        self.child, self.rtp_running = None, None

    def mark_changed(self) -> None:
        pass

    def confirm_producer(self, ok: bool) -> None:
        self.confirmed.append(ok)


def manager(stream: FakeStream) -> tuple[ProducerManager, Producer]:
    producers = ProducerManager(None, lambda: {"cam1": stream}, on_change=lambda _: None)  # type: ignore[arg-type, dict-item]
    producers.producers["cam1"] = producer = Producer("p1", TARGET)  # type: ignore[arg-type]
    return producers, producer


def poll(producers: ProducerManager, packets: int) -> list[str]:
    return producers._check({"p1": SimpleNamespace(packets=packets, bytes=packets * 1000, score=10)})


def test_ffmpeg_restarts_whose_first_seconds_are_silent_never_repair_a_receiving_producer():
    """Killed every few seconds (a viewer test, a crash loop): each new run is silent until it has
    reached the camera, while the last run's progress is still recent; its packets arrive, and it
    is killed before the next poll, which counts them with no FFmpeg running (run W)."""
    stream = FakeStream()
    producers, _ = manager(stream)
    packets, now = 0, time.monotonic() - 2  # (times within the progress window: only their order matters)
    for run in range(3 * REPAIR_AFTER_POLLS):
        stream.spawn(now + 0.05)  # a new run: nothing sent yet, the last progress is the old run's
        assert poll(producers, packets) == [], f"run {run}: repaired a producer that received"
        now += 0.1
        stream.report(now)  # it reached the camera and sent...
        packets += 50
        stream.exit()  # ... and was killed before the next poll
        assert poll(producers, packets) == [], f"run {run}: repaired a producer that received"


def test_a_running_ffmpeg_that_reports_progress_but_reaches_no_producer_is_repaired():
    stream = FakeStream()
    producers, producer = manager(stream)
    stream.spawn(time.monotonic() - 10)
    assert poll(producers, 100) == []  # receiving: confirmed
    assert stream.confirmed == [True]
    repaired = []
    for _ in range(REPAIR_AFTER_POLLS):
        stream.report(time.monotonic())  # FFmpeg says it writes; the SFU counts nothing
        repaired = poll(producers, 100)
    assert repaired == ["cam1"] and stream.confirmed == [True, False] and not producer.confirmed


def test_a_wall_clock_step_back_does_not_hide_a_producer_that_receives_nothing(monkeypatch):
    """NTP steps the clock back an hour while FFmpeg runs: its later reports carry wall times before
    its start, yet it still reports progress and the SFU still counts nothing."""
    stream = FakeStream()
    producers, _ = manager(stream)
    stream.spawn(time.monotonic() - 10)  # started with the wall clock right
    monkeypatch.setattr(time, "time", lambda: time.monotonic() - 3600)  # producers.py reads time.time()
    repaired = []
    for _ in range(REPAIR_AFTER_POLLS):
        stream.report(time.monotonic(), wall_step=-3600)
        repaired = poll(producers, 0)
    assert repaired == ["cam1"]
