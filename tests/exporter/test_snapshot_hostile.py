"""A hostile operator's snapshot (review21b): what the exporter accepts is exactly what the
``json`` module's reading accepted before orjson, and no file put in the snapshot's place can
stop the event loop.

Real files, a real FIFO, real HTTP (the app on 127.0.0.1).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import threading
import time

import pytest

from agent import snapshot
from exporter.app import create_app
from exporter.source import SnapshotSource

from .conftest import snapshot_dict, stream


def test_integers_past_64_bits_are_accepted_as_the_json_module_read_them(tmp_path):
    """orjson reads an integer outside [-2**63, 2**64) as a float; the shape wants an integer for
    ``restarts`` and ``restart_reasons``, so such a snapshot became unreadable (503 on /readyz)
    where the ``json`` module read it and the exporter accepted it."""
    path = tmp_path / snapshot.SNAPSHOT_NAME
    for big in (2**64, -(2**63) - 1, 10**30):
        s = stream("cam1", restarts=big, restart_reasons={"exit": big})
        snapshot.write_atomic(path, snapshot_dict([s]))
        view = SnapshotSource(path).read()
        assert not view.unreadable, view.error
        assert view.data is not None and view.streams[0]["restarts"] == big
        assert type(view.streams[0]["restarts"]) is int


def test_what_the_json_module_refused_is_still_refused(tmp_path):
    """The second reading changes nothing for a file of the wrong shape or of bad bytes."""
    path = tmp_path / snapshot.SNAPSHOT_NAME
    for bad in (b'{"agent": 1, "streams": []}', b'{"agent": {}, "streams": [', b'\xff\xfe{}',
                b'[' * 100000 + b']' * 100000, b'"' + b'9' * 5000 + b'"', b'9' * 5000):
        path.write_bytes(bad)
        view = SnapshotSource(path).read()
        assert view.data is None and view.unreadable, (bad[:20], view.error)


async def test_a_fifo_in_the_snapshots_place_does_not_stop_the_exporter(aiohttp_client, node):
    """A FIFO renamed over state.json: reading it blocked the event loop until someone opened it
    for writing, so /livez and every other answer hung.  It is now not a regular file: 503 at
    once, and the next real snapshot is read."""
    fifo = node.runtime / "evil.fifo"
    os.mkfifo(fifo)
    os.rename(fifo, node.runtime / snapshot.SNAPSHOT_NAME)
    rescue = threading.Timer(4.0, _open_for_writing, (node.runtime / snapshot.SNAPSHOT_NAME,))
    rescue.start()  # on the old code, unblocks the loop after 4 s so that the test ends
    started = time.monotonic()
    try:
        client = await aiohttp_client(create_app(node.settings))
        codes = [(await client.get(p)).status for p in ("/livez", "/readyz")]
    finally:
        rescue.cancel()
    took = time.monotonic() - started
    assert took < 2.0, f"answers took {took:.1f} s: the loop was blocked on the FIFO"
    assert codes == [200, 503]


def _open_for_writing(path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    os.close(fd)


def test_a_directory_or_a_device_in_the_snapshots_place_is_no_snapshot(tmp_path):
    """A directory keeps its message ("Is a directory"); a symlink to a character device is
    refused before a byte is read (/dev/zero never ends)."""
    path = tmp_path / snapshot.SNAPSHOT_NAME
    path.mkdir()
    view = SnapshotSource(path).read()
    assert view.data is None and view.error == "cannot read the agent snapshot: Is a directory"
    path.rmdir()
    path.symlink_to("/dev/null")
    view = SnapshotSource(path).read()
    assert view.data is None and view.error == "cannot read the agent snapshot: not a regular file"


async def test_a_directory_made_again_with_a_snapshot_of_the_same_size_is_read(aiohttp_client, node):
    """The runtime directory removed and made again, a new snapshot of the same size written
    into it (a restarted agent): ext4 gives the new file the inode just freed, so the
    (dev, inode, size) key of the stat per read, and of the watch's re-arm, said "unchanged"
    and the old snapshot was served (54 of 200 cycles in review21b's live run)."""
    from .test_snapshot_events import frames, shows
    client = await aiohttp_client(create_app(node.settings))
    stale = []
    for k in range(1, 41):
        shutil.rmtree(node.runtime)
        node.runtime.mkdir()
        node.write(frames(k))
        if not shows(await (await client.get("/v2/metrics")).text(), k):
            stale.append(k)
        if k % 4 == 0:
            await asyncio.sleep(0.6)  # the tick re-arms the watch on the new directory
    assert not stale, f"{len(stale)} of 40 new snapshots not served: {stale}"


async def test_a_symlinked_snapshot_whose_target_is_touched_stays_fresh(aiohttp_client, node):
    """state.json made a symlink to a file elsewhere, which the agent's touch (through the
    path) keeps fresh: the watch on the directory sees no event for a target in another
    directory, so the age grew from the last event and /readyz said 503 for a live agent
    (a stat per read, as before the watch, followed the link)."""
    client = await aiohttp_client(create_app(dataclasses.replace(node.settings, stale_after=1.0)))
    path = node.runtime / snapshot.SNAPSHOT_NAME
    other = node.runtime.parent / "elsewhere"
    other.mkdir()
    os.rename(path, other / snapshot.SNAPSHOT_NAME)
    os.symlink(other / snapshot.SNAPSHOT_NAME, node.runtime / "link.tmp")
    os.rename(node.runtime / "link.tmp", path)
    codes = []
    for _ in range(12):
        os.utime(path)  # follows the link, as the agent's touch does
        codes.append((await client.get("/readyz")).status)
        await asyncio.sleep(0.25)
    assert codes == [200] * 12, codes
    os.utime(other / snapshot.SNAPSHOT_NAME, (time.time() - 5, time.time() - 5))  # the agent frozen
    assert (await client.get("/readyz")).status == 503


BIG = "1" + "0" * 400  # an integer literal no float holds
_ACCEPTED = {  # one field each, of values the shape takes (numbers may be null) or that JSON allows
    "progress.frames null": lambda s, d: s["progress"].update(frames=None, fps=None, bytes=None),
    "recording figures null": lambda s, d: s["recording"].update(segment_count=None, total_bytes=None),
    "recording total null": lambda s, d: s["recording"].update(segment_count=3, total_bytes=None),
    "recording newest null": lambda s, d: s["recording"].update(segment_count=3, newest_segment_at=None),
    "recording newest text": lambda s, d: s["recording"].update(segment_count=3, newest_segment_at="yesterday"),
    "recording newest huge": lambda s, d: s["recording"].update(segment_count=3, newest_segment_at="BIG"),
    "segment duration null": lambda s, d: s["recording"].update(segment_duration_seconds=None),
    "segment duration text": lambda s, d: s["recording"].update(segment_duration_seconds="10s"),
    "segment duration huge": lambda s, d: s["recording"].update(segment_duration_seconds="BIG"),
    "producer.since null": lambda s, d: s.update(producer={"id": "p", "since": None, "confirmed": True}),
    "restart_reasons huge": lambda s, d: s["restart_reasons"].update(exit="BIG"),
    "pid_started_at huge": lambda s, d: s.update(pid_started_at="BIG"),
    "deleted huge": lambda s, d: s["recording"].update(deleted={"age": {"segments": "BIG"}}),
    "sfu restart huge": lambda s, d: d.update(sfu={"state": "up", "restart_reasons": {"exit": "BIG"}}),
    "last_reload.at text": lambda s, d: d["config"]["last_reload"].update(at="yesterday"),
    "fleet.owned null": lambda s, d: d.update(fleet={"etcd_up": True, "owned": None}),
    "pid negative": lambda s, d: s.update(pid=-1, pid_started_at=1.0),
    "stream id lone surrogate": lambda s, d: s.update(id="cam\udcff", pid=os.getpid()),  # json reads "\udcff"
    "deletion reason lone surrogate": lambda s, d: s["recording"].update(deleted={"\ud800": {"segments": 1}}),
    "sfu reason lone surrogate": lambda s, d: d.update(sfu={"state": "up", "restart_reasons": {"\udcff": 1}}),
    "consumers stream lone surrogate": lambda s, d: d.update(consumers={"per_stream": {"\udcff": 1}}),
    "agent.runtime_dir list": lambda s, d: d["agent"].update(runtime_dir=[]),
    "config.path object": lambda s, d: d["config"].update(path={}),
    "config.needs_restart true": lambda s, d: d["config"].update(needs_restart=True),
    "histogram bound text": lambda s, d: d["agent"].update(event_loop_lag_seconds={"sum": 1, "buckets": [["x", 1]]}),
}
_UNREADABLE = ("huge", "histogram bound text", "newest text", "duration text")


@pytest.mark.parametrize("case", list(_ACCEPTED))
async def test_every_route_answers_every_snapshot_the_readers_accept(aiohttp_client, node, case):
    """A snapshot of one odd field, as an operator's broken tool may write it: /v2/metrics answered
    500 (OverflowError, TypeError, ValueError in the render), so Prometheus lost every series of
    the node; the health routes answered 500 on a config or agent field they read unchecked.
    Now each is either presented or the file is named unreadable (a number no float holds; a
    histogram bound that is not a number)."""
    s = stream("cam1")
    data = snapshot_dict([s, stream("cam2")])
    _ACCEPTED[case](s, data)
    (node.runtime / snapshot.SNAPSHOT_NAME).write_text(json.dumps(data).replace('"BIG"', BIG))
    client = await aiohttp_client(create_app(node.settings))
    for route in ("/v2/health/system", "/v2/health/streams/cam1", "/v2/health/ingestion", "/readyz"):
        answer = await client.get(route)
        assert answer.status < 500 or "agent state unreadable" in await answer.text(), (route, await answer.text())
    answer = await client.get("/v2/metrics")
    assert answer.status == 200, await answer.text()
    text = await answer.text()
    readable = "vas_agent_state_readable 1.0" in text
    assert readable != case.endswith(_UNREADABLE), case  # a number no float holds, a bound no float
    assert ('vas_stream_up{stream="cam2"} 1.0' in text) == readable
