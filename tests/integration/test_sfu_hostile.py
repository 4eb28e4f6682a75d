"""The reference SFU (sfu/server.js on real mediasoup 3.8.4) fed what a hostile or
buggy caller sends: racing owners, viewers that never connect, malformed bodies.

Every count here is mediasoup's own: producers from ``GET /producers``
(``getStats()``), open sockets from the worker process's file descriptors.
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from camera.fixture import free_port
from sfu.real_sfu import call, get, start_real_sfu
from sfu.viewer import Viewer

pytestmark = pytest.mark.integration


@pytest.fixture
def sfu(tmp_path) -> Iterator[int]:
    """The reference SFU on a free port (with a short viewer timeout); yields the port."""
    port = free_port()
    proc = start_real_sfu(port, "--viewer-timeout", "2", log=tmp_path / "sfu.log")
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def raw(port: int, method: str, path: str, data: bytes | None = None) -> tuple[int, dict | None]:
    """Status and JSON answer of any request (errors included)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body else None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def producer_body(stream_id: str, epoch: int | None = None, ssrc: int = 1234) -> dict:
    body = {"stream_id": stream_id, "kind": "video", "codec": "H264", "payload_type": 96, "ssrc": ssrc}
    if epoch is not None:
        body["epoch"] = epoch
    return body


def worker_sockets(port: int) -> int:
    """Sockets the mediasoup worker process holds open (each transport binds UDP, and TCP)."""
    pid = get(port, "/health")["worker_pid"]  # type: ignore[index]
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            continue  # closed while we looked
    return count


def test_racing_owners_never_leave_a_lower_epoch_registered_after_a_higher_one(sfu):
    """Two owners POST at once (a paused fleet node wakes up while the new one takes over).

    A fence checked only before the await on the worker lets both pass and
    registers the older owner's producer after the newer one's: two owners of
    one stream in the SFU (20 of 20 rounds without the second check).
    Registration order is the order ``GET /producers`` lists them in.
    """
    for round_ in range(10):
        sid = f"race{round_}"
        answers: dict[int, int] = {}

        def post(epoch: int, sid: str = sid, answers: dict[int, int] = answers) -> None:
            answers[epoch] = raw(sfu, "POST", "/producers", json.dumps(producer_body(sid, epoch)).encode())[0]

        threads = [threading.Thread(target=post, args=(epoch,)) for epoch in (3, 7, 5, 9, 4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
        epochs = [p["epoch"] for p in get(sfu, "/producers") if p["stream_id"] == sid]  # type: ignore[union-attr]
        assert epochs == sorted(epochs), f"round {round_}: registered in the order {epochs} ({answers})"
        assert 9 in epochs and answers[9] == 201
        assert all(answers[e] == 409 for e in answers if e not in epochs), answers


def test_a_viewer_consumes_the_newest_owners_producer(sfu):
    """During a handover both producers exist for a moment: a viewer must get the new one.

    The first registered is the old owner's, about to be closed: a viewer given
    that one would lose its video when it closes.
    """
    old = call(sfu, "POST", "/producers", producer_body("cam1", epoch=4))
    new = call(sfu, "POST", "/producers", producer_body("cam1", epoch=6))
    viewer: dict = call(sfu, "POST", "/viewers", {"client_id": "v"})  # type: ignore[assignment]
    consumer: dict = call(sfu, "POST", f"/viewers/{viewer['viewer_id']}/consume",  # type: ignore[assignment]
                          {"stream_id": "cam1", "rtpCapabilities": viewer["routerRtpCapabilities"]})
    assert consumer["producer_id"] == new["producer_id"] != old["producer_id"]  # type: ignore[index]


@pytest.mark.slow
def test_a_viewer_that_never_connects_is_closed(sfu):
    """``POST /viewers`` and nothing else: its WebRTC transport (a UDP and a TCP socket) stays forever.

    Such a viewer has no consumer, so the agent never sees it (``GET
    /consumers``) and cannot expire it; a client that retries leaks a port per
    try unless the app closes such a viewer itself (``--viewer-timeout``).
    """
    before = worker_sockets(sfu)
    viewers = [call(sfu, "POST", "/viewers", {"client_id": f"v{i}"}) for i in range(3)]
    assert worker_sockets(sfu) == before + 2 * len(viewers)
    deadline = time.monotonic() + 6  # --viewer-timeout 2, and the worker closing them
    while worker_sockets(sfu) > before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker_sockets(sfu) == before
    status, answer = raw(sfu, "DELETE", f"/viewers/{viewers[0]['viewer_id']}")  # type: ignore[index]
    assert status == 404, answer


@pytest.mark.slow
def test_a_connected_viewer_outlives_the_timeout_and_an_unconnected_consumer_does_not(sfu):
    """The timeout closes transports that never completed DTLS, not a real viewer's.

    A consumer whose client never connects is useless too: it goes with its transport, and the
    agent sees it leave ``GET /consumers``.
    """
    call(sfu, "POST", "/producers", producer_body("cam1"))
    idle: dict = call(sfu, "POST", "/viewers", {"client_id": "idle"})  # type: ignore[assignment]
    call(sfu, "POST", f"/viewers/{idle['viewer_id']}/consume",
         {"stream_id": "cam1", "rtpCapabilities": idle["routerRtpCapabilities"]})

    async def watch() -> Viewer:
        async with Viewer(sfu, "cam1", client_id="real") as viewer:
            deadline = time.monotonic() + 10
            while "connected" not in viewer.states and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(4)  # twice --viewer-timeout
            clients = sorted(c["client_id"] for c in get(sfu, "/consumers"))  # type: ignore[union-attr]
            assert clients == ["real"], (clients, viewer.states)
            assert not viewer.closed.is_set(), viewer.states
            return viewer

    viewer = asyncio.run(watch())
    assert "connected" in viewer.states


@pytest.mark.parametrize("dtls", [{}, {"role": "client"}, {"fingerprints": "x"}])
def test_malformed_dtls_parameters_are_a_400_not_a_500(sfu, dtls):
    """mediasoup throws a TypeError on them: the caller's fault, answered 400 with a message.

    Not a 500 with an empty message (" [method:transport.connect]") and a stack trace in the
    app's log, as for a real fault of the app.
    """
    viewer: dict = call(sfu, "POST", "/viewers", {"client_id": "v"})  # type: ignore[assignment]
    status, answer = raw(sfu, "POST", f"/viewers/{viewer['viewer_id']}/connect",
                         json.dumps({"dtlsParameters": dtls}).encode())
    assert status == 400, answer
    assert answer is not None and "dtlsParameters" in answer["error"], answer
    assert raw(sfu, "GET", "/health")[0] == 200


@pytest.mark.parametrize("epoch", ["1e999", "Infinity", "", "abc", "-1", "7.5"])
def test_a_delete_with_a_malformed_epoch_is_refused_not_let_through_the_fence(sfu, epoch):
    """``?epoch=1e999`` is Number() Infinity, above every epoch: it would close a fleet owner's
    producer.  ``?epoch=`` is 0.  Only a plain integer may be compared."""
    made: dict = call(sfu, "POST", "/producers", producer_body("cam1", epoch=7))  # type: ignore[assignment]
    status, answer = raw(sfu, "DELETE", f"/producers/{made['producer_id']}?epoch={epoch}")
    assert status == 400, answer
    assert [p["producer_id"] for p in get(sfu, "/producers")] == [made["producer_id"]]  # type: ignore[union-attr]
    assert raw(sfu, "DELETE", f"/producers/{made['producer_id']}?epoch=7")[0] == 204


def test_a_body_over_the_limit_is_answered_413(sfu):
    """Answered, not a connection reset mid-upload: the caller learns why."""
    status, answer = raw(sfu, "POST", "/producers", b" " * (2 << 20))
    assert status == 413 and answer == {"error": "body over 1 MiB"}
    assert raw(sfu, "GET", "/health")[0] == 200
