"""The exporter learns of a new snapshot from inotify (issue 21, items 1 and 5): the first answer
after a rename shows it, /v2/metrics is rendered when it lands (never on a scrape's path), a
load balancer's check costs no ``stat``, and without a watch (the directory removed and made
again) every read ``stat``s the file as before until the watch is armed again.

Real HTTP (the app on 127.0.0.1), real files, real renames (agent.snapshot.write_atomic).
"""
from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import snapshot
from exporter.app import CONTEXT, create_app

from .conftest import snapshot_dict, stream


async def until(check: Callable[[], Any], timeout: float, what: str) -> None:
    """Wait for ``check()`` to hold, on the loop (the watch's events are read there)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.02)


def frames(k: int, n: int = 2) -> dict[str, Any]:
    """A snapshot of ``n`` streams whose frame counts say ``k``."""
    streams = [stream(f"cam{i}", progress={"fps": 25.0, "frames": 1000 * k + i, "bytes": 5000 * k,
                                           "last_progress_at": time.time()}) for i in range(n)]
    return snapshot_dict(streams)


def shows(body: str, k: int) -> bool:
    return f'vas_stream_frames_total{{stream="cam0"}} {1000 * k}.0\n' in body


async def test_a_scrape_after_a_new_snapshot_finds_it_rendered_and_pays_no_render(aiohttp_client, node):
    """Every new snapshot's values are in the first scrape after its rename, and the render ran
    when the snapshot landed (the watch's callback, outside any request's task), never on the
    scrape's path: before, each first scrape after a new snapshot rendered all of it."""
    client = await aiohttp_client(create_app(node.settings))
    ctx = client.server.app[CONTEXT]
    in_request: list[bool] = []
    real = ctx.metrics._render_snapshot

    def counted(view: Any) -> bytes:
        task = asyncio.current_task()  # None in the watch's callback; the scan has its own task
        in_request.append(task is not None and task.get_name() != "recording-scan")
        return real(view)
    ctx.metrics._render_snapshot = counted  # type: ignore[method-assign]  # counts, renders as before
    for k in range(1, 21):
        node.write(frames(k))
        body = await (await client.get("/v2/metrics")).text()
        assert shows(body, k), f"snapshot {k} not in the first scrape after its rename"
    assert in_request.count(True) == 0, f"{in_request.count(True)} of 20 new snapshots rendered on a scrape's path"
    assert in_request.count(False) >= 20


async def test_a_scrape_sent_during_the_render_gets_the_new_text(aiohttp_client, node):
    """A scrape whose request is on the wire while the exporter renders a new 500-stream
    snapshot waits for that render: it never gets the previous snapshot's text."""
    client = await aiohttp_client(create_app(node.settings))
    ctx, port = client.server.app[CONTEXT], client.server.port
    spans: list[tuple[float, float]] = []
    rendering, on_wire = threading.Event(), threading.Event()
    on_wire.set()
    real = ctx.metrics._render_snapshot

    def timed(view: Any) -> bytes:
        started = time.perf_counter()
        rendering.set()
        try:
            # A render that lasts until the scrape below is on the wire (a big node's on a slow host):
            # a fixed length would end first whenever the scraping thread waits for a core.
            assert on_wire.wait(10), "the scrape was never sent"
            return real(view)
        finally:
            spans.append((started, time.perf_counter()))
    ctx.metrics._render_snapshot = timed  # type: ignore[method-assign]
    node.write(frames(0, 500))
    await (await client.get("/v2/metrics")).read()

    def write_and_scrape(k: int) -> tuple[float, str]:
        rendering.clear()
        on_wire.clear()
        node.write(frames(k, 500))
        assert rendering.wait(10), f"snapshot {k}: no render began"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            sent = time.perf_counter()
            conn.request("GET", "/v2/metrics")
            on_wire.set()
            return sent, conn.getresponse().read().decode()
        finally:
            conn.close()
    for k in range(1, 6):
        sent, body = await asyncio.to_thread(write_and_scrape, k)
        assert shows(body, k), f"snapshot {k}: the scrape sent during its render got other text"
        assert any(start <= sent <= end for start, end in spans), f"snapshot {k}: the scrape was not sent mid-render"


async def test_readyz_pays_no_stat_and_its_age_moves_with_the_clock(aiohttp_client, node, monkeypatch):
    """While the watch is armed, a load balancer's check costs no ``stat`` of the snapshot
    (one per answer before); the age is still the one of the moment of the answer: a touch is
    seen at once, and without one (an agent that died) the age grows until 503."""
    client = await aiohttp_client(create_app(node.settings))
    ctx = client.server.app[CONTEXT]
    path, real, stats = str(node.runtime / snapshot.SNAPSHOT_NAME), os.stat, []

    def counted(target: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        stats.append(os.fspath(target) == path if isinstance(target, str | os.PathLike) else False)
        return real(target, *args, **kwargs)
    await client.get("/readyz")
    monkeypatch.setattr(os, "stat", counted)  # counts, then stats as before
    for _ in range(50):
        assert (await client.get("/readyz")).status == 200
    assert stats.count(True) == 0, f"{stats.count(True)} stats of the snapshot for 50 checks"
    node.age(2.0)  # a touch (as the agent's heartbeat), dated 2 s back
    age = (await (await client.get("/readyz")).json())["checks"][0]["value"]
    assert 1.9 <= age < 3.0, age
    node.age(ctx.settings.stale_after - 0.3)  # then no event at all: the agent died
    assert (await client.get("/readyz")).status == 200
    await until(lambda: not ctx.view().fresh(ctx.settings.stale_after), 3.0, "the age grows past stale_after")
    assert (await client.get("/readyz")).status == 503
    assert stats.count(True) == 2, "one stat per event (two touches), none per answer"


async def test_a_snapshot_replaced_twice_at_once_is_served_as_the_last(aiohttp_client, node):
    client = await aiohttp_client(create_app(node.settings))
    for k in range(1, 6):
        node.write(frames(2 * k))
        node.write(frames(2 * k + 1))
        assert shows(await (await client.get("/v2/metrics")).text(), 2 * k + 1)


async def test_the_directory_removed_and_made_again_still_brings_new_snapshots(aiohttp_client, node):
    """The watch dies with its directory: every read then ``stat``s the file (so an answer is
    true at once), and the app's tick arms a watch on the new directory."""
    client = await aiohttp_client(create_app(node.settings))
    source = client.server.app[CONTEXT].source
    assert source.watching
    shutil.rmtree(node.runtime)
    assert (await client.get("/readyz")).status == 503  # no snapshot: seen by the first answer
    assert not source.watching
    node.runtime.mkdir()
    node.write(frames(7))
    assert shows(await (await client.get("/v2/metrics")).text(), 7)  # a stat per read meanwhile
    await until(lambda: source.watching, 3.0, "a watch on the new directory")
    for k in (8, 9):
        node.write(frames(k))
        assert shows(await (await client.get("/v2/metrics")).text(), k)
    moved = node.runtime.parent / "elsewhere"
    moved.mkdir()
    snapshot.write_atomic(moved / snapshot.SNAPSHOT_NAME, frames(10))
    os.rename(moved, node.runtime.parent / "spare")
    shutil.rmtree(node.runtime)
    os.rename(node.runtime.parent / "spare", node.runtime)  # a whole directory put in its place
    assert shows(await (await client.get("/v2/metrics")).text(), 10)
    await until(lambda: source.watching, 3.0, "a watch on the directory put in place")


async def test_an_exporter_started_before_the_runtime_dir_exists_watches_it_once_made(aiohttp_client, tmp_path, node):
    """No directory to watch at start (the agent not started yet): a stat per read, then a watch."""
    shutil.rmtree(node.runtime)
    client = await aiohttp_client(create_app(node.settings))
    source = client.server.app[CONTEXT].source
    assert not source.watching
    assert (await client.get("/readyz")).status == 503
    node.runtime.mkdir()
    node.write(frames(3))
    assert shows(await (await client.get("/v2/metrics")).text(), 3)
    await until(lambda: source.watching, 3.0, "a watch once the directory exists")
    node.write(frames(4))
    assert shows(await (await client.get("/v2/metrics")).text(), 4)


def test_events_are_read_from_the_kernel_buffer_as_written(tmp_path):
    """masks_for() over a real inotify buffer: the file's events and the directory's own."""
    from exporter.dirwatch import IN_ATTRIB, IN_MOVED_TO, DirWatch, masks_for
    watch = DirWatch(tmp_path)
    watch.open()
    try:
        snapshot.write_atomic(tmp_path / "state.json", {"x": 1})
        os.utime(tmp_path / "state.json")
        (tmp_path / "other.json").write_text("{}")
        mask = masks_for(watch.read(), b"state.json")
        assert mask & IN_MOVED_TO and mask & IN_ATTRIB
        assert watch.read() == b""
        assert not watch.moved()
    finally:
        watch.close()
        watch.close()


def test_nothing_is_left_running_by_the_watch(tmp_path):
    """The watch is a descriptor, not a thread (issue 21, item 9: no threads come and go)."""
    before = threading.active_count()
    from exporter.dirwatch import DirWatch
    watch = DirWatch(Path(tmp_path))
    watch.open()
    assert threading.active_count() == before
    watch.close()


def test_what_orjson_refuses_is_read_as_the_json_module_reads_it():
    """orjson parses the snapshot (twice as fast); what only the json module reads (NaN, a lone
    surrogate) is still read, and garbage still fails with json's own message (what "agent state
    unreadable" has always shown).  An integer past 64 bits (no counter gets there) is read as
    a float, as most JSON readers do."""
    import json
    import math

    import pytest

    from exporter.source import parse
    assert math.isnan(parse(b'{"fps": NaN}')["fps"])
    assert parse(b'{"n": 123456789012345678901234567890}')["n"] == 1.2345678901234568e+29
    assert parse(b'{"s": "\\ud800"}')["s"] == "\ud800"
    with pytest.raises(json.JSONDecodeError, match="Expecting value"):
        parse(b'{"x": }')
