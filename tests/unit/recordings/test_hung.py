"""Folders that do not answer: the status texts (pure) and the probe's verdicts, with a fake
lstat that blocks for the names a test calls hung (the real hung mount: tests/faults/test_hung_mount.py)."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import pytest

from agent import blocking
from agent.config.model import RecordingsConfig
from agent.recordings import hung
from agent.recordings.hung import Answering, problem_text, skipped_text, stuck_after, stuck_text, waiting_text

ROOT = Path("/srv/rec")


def test_texts_name_the_paths_and_say_what_retention_does():
    assert skipped_text(ROOT, set()) is None
    one = skipped_text(ROOT, {"cam2"})
    assert one is not None and one.startswith("/srv/rec/cam2: not answering") and "leaves it out" in one
    two = skipped_text(ROOT, {"cam9", "cam2"})
    assert two is not None and two.startswith("/srv/rec/cam2, /srv/rec/cam9:") and "leaves them out" in two
    many = skipped_text(ROOT, {f"cam{i}" for i in range(10, 50)})
    assert many is not None and many.startswith("/srv/rec/cam10, /srv/rec/cam11")
    assert "/srv/rec/cam14 and 35 more:" in many
    assert waiting_text(ROOT, root_answers=False, waited=10).startswith("recordings root /srv/rec is not answering")
    below = waiting_text(ROOT, root_answers=True, waited=10)
    assert below.startswith("a directory below /srv/rec is not answering")
    assert problem_text(None, None) is None
    assert problem_text("a", None, "b") == "a; b"


def test_a_call_is_named_only_past_stuck_after_and_the_oldest_first():
    now = 1000.0
    assert stuck_text([], now) is None
    assert stuck_text([("retention:plan", now - hung.STUCK_AFTER + 1)], now) is None
    text = stuck_text([("retention:scan", now - 11), ("retention:folders", now - 50)], now)
    assert text is not None and text.startswith("retention:folders has been running for more than")


class FakeDisk:
    """lstat/listdir for a root whose ``hung`` names block until ``release``."""

    def __init__(self, names: list[str], hung_names: set[str]) -> None:
        self.names, self.hung = names, hung_names
        self.release = threading.Event()

    def listdir(self, path: Path) -> list[str]:
        return list(self.names)

    def lstat(self, path: Path) -> None:
        if path.name in self.hung and not self.release.wait(10):
            raise AssertionError("never released")


@pytest.fixture
def quick_probe(monkeypatch):
    monkeypatch.setattr(hung, "PROBE_TIMEOUT", 2.0)  # the fake's answers are at once; beside other workers


async def test_folders_that_do_not_answer_are_found_logged_once_and_return(quick_probe, caplog):
    disk = FakeDisk(["cam1", "cam2", "cam3"], {"cam2"})
    answering = Answering(ROOT, lstat=disk.lstat, listdir=disk.listdir)
    with caplog.at_level(logging.INFO, "vas.retention"):
        assert await answering.find() == {"cam2"}
        assert await answering.find() == set()  # still hung: not new (its probe still stuck fails at once)
        assert answering.hung == {"cam2"}
        assert answering.text() == skipped_text(ROOT, {"cam2"})
        assert await answering.recheck() == set()
        disk.release.set()  # its stuck probe returns, then a new probe may go (the key)
        for _ in range(100):
            if back := await answering.recheck():
                break
            await asyncio.sleep(0.05)
        assert back == {"cam2"}
    assert answering.hung == set() and answering.text() is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "/srv/rec/cam2 is not answering" in errors[0].getMessage()
    assert any("/srv/rec/cam2 answers again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


async def test_thousands_of_folders_that_answer_are_never_called_hung(tmp_path, caplog):
    """All probed at once, they queued behind the worker threads and half timed out there."""
    for i in range(3000):
        (tmp_path / f"cam{i:04d}").mkdir()
    answering = Answering(tmp_path)
    with caplog.at_level(logging.ERROR, "vas.retention"):
        assert await answering.find() == set()
    assert caplog.records == [] and answering.text() is None


async def test_among_thousands_only_the_folders_that_do_not_answer_are_hung(quick_probe):
    names = [f"cam{i:04d}" for i in range(3000)]
    disk = FakeDisk(names, {"cam0007", "cam1500", "cam2999"})
    try:
        assert await Answering(ROOT, lstat=disk.lstat, listdir=disk.listdir).find() == disk.hung
    finally:
        disk.release.set()


async def test_many_folders_on_a_hung_mount_are_found_in_about_one_timeout(quick_probe, monkeypatch):
    """Each probe held its slot for its whole timeout: 40 hung folders took 40/8 timeouts, and retention's
    start waited for them.  A slow probe now gives up its slot (and its counted thread) after SLOT_HOLD."""
    monkeypatch.setattr(hung, "SLOT_HOLD", 0.2, raising=False)  # (absent before: slots held for the timeout)
    names = [f"cam{i:04d}" for i in range(1000)]
    disk = FakeDisk(names, set(names[::25]))
    workers = blocking.Workers()
    monkeypatch.setattr(blocking, "_workers", workers)
    counted: list[int] = []
    sampling = asyncio.ensure_future(_sample(lambda: workers.threads, counted))
    try:
        started = time.monotonic()
        assert await Answering(Path("/srv/many"), lstat=disk.lstat, listdir=disk.listdir).find() == disk.hung
        took = time.monotonic() - started
    finally:
        sampling.cancel()
        disk.release.set()
    assert len(disk.hung) == 40 and took < 2.5 * hung.PROBE_TIMEOUT, f"{took:.1f}s to find 40 hung folders"
    # The hung ones hold no counted thread past SLOT_HOLD: held, 40 would fill the pool (MAX_THREADS, 32).
    # Not PROBE_CONCURRENCY + 1: on a loaded host the pool adds a thread for calls its lookout saw
    # wait (agent/blocking.py), and a CI run counted 10.
    assert max(counted) <= 2 * hung.PROBE_CONCURRENCY < blocking.MAX_THREADS


async def _sample(read, into: list[int]) -> None:
    while True:
        into.append(read())
        await asyncio.sleep(0.01)


async def test_a_root_that_does_not_answer_is_what_retention_waits_for(quick_probe, caplog):
    release = threading.Event()
    answering = Answering(ROOT, listdir=lambda p: release.wait(10) and [])  # type: ignore[arg-type,return-value]
    try:
        assert await answering.find() == set()
        assert not answering.root_answers
        with caplog.at_level(logging.INFO, "vas.retention"):
            answering.impatient(10)
            answering.impatient(10)  # said once
            assert answering.text() is not None and answering.text().startswith("recordings root /srv/rec")
            answering.watching()
        assert answering.text() is None
        assert [r.levelname for r in caplog.records] == ["ERROR", "INFO"]
    finally:
        release.set()


def test_a_short_probe_interval_never_calls_an_ordinary_pass_stuck():
    """probe_interval 1 s: a pass of a few seconds over many files is no hang (review28)."""
    assert stuck_after(False, 1.0) == hung.STUCK_AFTER and stuck_after(False, 60.0) == 60.0
    assert stuck_after(True, 60.0) == hung.STUCK_AFTER


def test_with_no_folder_known_hung_a_call_is_named_later():
    alone = RecordingsConfig().probe_interval  # what the service passes with no folder known hung
    now = 1000.0
    calls = [("retention:delete:age", now - 20)]
    assert stuck_text(calls, now, after=alone) is None  # a long pass over many files
    calls = [("retention:delete:age", now - alone - 1)]
    text = stuck_text(calls, now, after=alone)
    assert text is not None and f"more than {alone:g}s" in text


async def test_a_root_that_hangs_after_its_watch_started_is_said_once_and_cleared(quick_probe, caplog):
    listing = {"hang": False}
    release = threading.Event()

    def listdir(path: Path) -> list[str]:
        if listing["hang"]:
            release.wait(10)
        return []
    answering = Answering(ROOT, listdir=listdir)
    answering.watching()
    try:
        with caplog.at_level(logging.INFO, "vas.retention"):
            listing["hang"] = True
            await answering.find()
            await answering.find()  # said once
            assert not answering.root_answers
            text = answering.text()
            assert text is not None and text.startswith("recordings root /srv/rec is not answering")
            listing["hang"] = False
            release.set()  # the stuck listing returns, then a new one may go (the key)
            for _ in range(100):
                await answering.find()
                if answering.root_answers:
                    break
                await asyncio.sleep(0.05)
        assert answering.text() is None
        assert [r.levelname for r in caplog.records] == ["ERROR", "INFO"]
    finally:
        release.set()
