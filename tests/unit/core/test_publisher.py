"""The publisher: its measurement of the event loop's lag, and the snapshot's writes (rendered on
the loop, written to real files by its writer thread)."""
from __future__ import annotations

import asyncio
import sys
import threading

from agent.sdnotify import Notifier


def test_loop_lag_histogram_is_cumulative():
    from agent.publisher import LoopLag
    lag = LoopLag()
    for sample in (0.0005, 0.003, 0.2, 7.0, -1):
        lag.observe(sample)
    view = lag.view()
    assert view["count"] == 5 and view["max"] == 7.0
    assert dict((str(b), n) for b, n in view["buckets"])["0.001"] == 2  # -1 counts as 0
    assert view["buckets"][-1] == ["+Inf", 5]


# -- the snapshot's file I/O is the writer thread's, off the event loop ------------------------
_renames: dict[str, list[int]] = {}  # destination -> threads that renamed a file onto it


def _audit(event: str, args: tuple) -> None:
    if event == "os.rename" and str(args[1]) in _renames:
        _renames[str(args[1])].append(threading.get_ident())


sys.addaudithook(_audit)  # for good (hooks cannot be removed): it only notes the paths tests name


def _publisher(path, render, restored=lambda: None):
    from agent.publisher import Publisher
    return Publisher(path, render, Notifier(env={}), on_restored=restored)


async def _until(check, what: str, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def test_a_state_change_is_written_within_flush_delay_by_a_thread_other_than_the_loop(tmp_path):
    # A kill that lands while the loop writes the file waits for the file system (~1 ms at 200
    # streams on ext4, more on a busy journal): the loop renders, another thread writes.
    from agent.publisher import FLUSH_DELAY
    path = tmp_path / "state.json"
    _renames[str(path)] = []
    state = {"n": 0}
    pub = _publisher(path, lambda: f'{{"n":{state["n"]}}}')
    pub.start()
    try:
        start_renames = len(_renames[str(path)])
        state["n"] = 1
        pub.changed(True)
        await asyncio.sleep(FLUSH_DELAY)
        await _until(lambda: path.read_text() == '{"n":1}', "the state change in the file")
        flushes = _renames[str(path)][start_renames:]
        assert flushes and threading.get_ident() not in flushes
    finally:
        pub.close()


async def test_a_write_on_the_loop_is_never_replaced_by_an_older_flush_still_on_its_way(tmp_path):
    path = tmp_path / "state.json"
    texts = iter(['{"old":"' + "x" * 20_000_000 + '"}', '{"new":1}'])  # 20 MB: its write takes a while
    pub = _publisher(path, lambda: next(texts))
    pub.flush()  # the big one, on the writer thread
    assert pub.write()  # at once, on the loop: must wait for that flush, not be overwritten by it
    await asyncio.sleep(0.2)
    pub.close()
    assert path.read_text() == '{"new":1}'


async def test_a_flush_into_a_removed_runtime_dir_recreates_it_and_writes(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir()
    restored = []
    pub = _publisher(runtime / "state.json", lambda: '{"n":2}', restored=lambda: restored.append(1))
    runtime.rmdir()
    pub.flush()  # the thread fails (no directory); the loop repairs and writes
    await _until(lambda: (runtime / "state.json").exists(), "the snapshot written again")
    pub.close()
    assert restored == [1] and (runtime / "state.json").read_text() == '{"n":2}'


async def test_a_text_the_writer_cannot_encode_does_not_end_the_writer_thread(tmp_path):
    # A lone surrogate cannot be written as UTF-8: the error goes to the loop (logged there), and the
    # next flush is still written (a dead writer would leave the file stale while the heartbeat
    # keeps its mtime fresh).
    path = tmp_path / "state.json"
    texts = iter(['{"bad":"\udcff"}', '{"n":3}'])
    loop = asyncio.get_running_loop()
    errors: list[BaseException] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context.get("exception")))
    pub = _publisher(path, lambda: next(texts, '{"n":3}'))
    try:
        pub.flush()
        await _until(lambda: errors, "the writer's error reported on the loop")
        pub.flush()
        await _until(lambda: path.exists() and path.read_text() == '{"n":3}', "the next flush written")
        assert isinstance(errors[0], UnicodeError)
    finally:
        pub.close()
        loop.set_exception_handler(None)
