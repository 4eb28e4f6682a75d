"""TEST STAND-IN for an SFU that misbehaves, for what a real SFU cannot be made to do.

Every test that needs an SFU runs the reference app on real mediasoup
(sfu/server.js through tests/sfu/real_sfu.py).  This stand-in is kept ONLY to
play an SFU that answers badly, and the tests that use it say so in their name
(``..._with_a_misbehaving_standin``, ``..._with_a_slow_standin``):

* ``--chaos 500|slow|badjson|wrongshape|hugebody``: every answer is a 500, 30 s
  late, malformed JSON, the wrong shape or a body over 1 MiB
  (tests/integration/test_sfu_client.py, test_sfu.py's contract-errors test);
* ``--create-delay S`` (or ``POST /_test/delay {"create": S}``): every
  ``POST /producers`` creates its producer S seconds late and only then answers,
  even if the caller gave up meanwhile (tests/integration/test_sfu_reconcile.py).

    python standin_sfu.py --port PORT [--chaos ...] [--create-delay S]

Otherwise it implements the agent's HTTP contract (docs/mediasoup-contract.md)
on 127.0.0.1 with the same epoch fence as the reference app (a POST without
epoch is not fenced), and, per producer, a UDP socket that parses the RTP
FFmpeg sends.  Its other ``/_test`` endpoints (consumers, mute, stats) are no
longer used by any test: real consumers, iptables and mediasoup's own counters
(``GET /producers`` of the reference app) replaced them.  Never used by product
code.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import struct
import time

from aiohttp import web

_ids = itertools.count(1)


class RtpCounter(asyncio.DatagramProtocol):
    """Counts one producer's RTP: matching packets, mismatches and sequence gaps."""

    def __init__(self, ssrc: int, payload_type: int) -> None:
        self.ssrc, self.payload_type = ssrc, payload_type
        self.packets = self.bytes = self.lost = self.mismatched_ssrc = self.mismatched_pt = self.malformed = 0
        self.last_seq: int | None = None
        self.muted = False  # a test switch: the SFU stops receiving (packets stand still)

    def datagram_received(self, data: bytes, addr) -> None:
        if self.muted:
            return
        if len(data) < 12 or data[0] >> 6 != 2:
            self.malformed += 1
            return
        pt, (seq,), (ssrc,) = data[1] & 0x7F, struct.unpack("!H", data[2:4]), struct.unpack("!I", data[8:12])
        if ssrc != self.ssrc:
            self.mismatched_ssrc += 1
            return
        if pt != self.payload_type:
            self.mismatched_pt += 1
            return
        if self.last_seq is not None:
            gap = (seq - self.last_seq - 1) & 0xFFFF
            if gap < 0x8000:  # forward jump (a restarted sender starts elsewhere: counted too)
                self.lost += gap
        self.last_seq = seq
        self.packets += 1
        self.bytes += len(data)


class StandinSfu:
    def __init__(self, chaos: str | None, create_delay: float = 0.0) -> None:
        self.chaos, self.create_delay = chaos, create_delay
        self.refused: list[dict] = []  # 409s: what a stale owner tried
        self.producers: dict[str, dict] = {}
        self.consumers: dict[str, dict] = {}
        self.deleted: list[dict] = []

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._misbehave])
        app.router.add_get("/health", self.health)
        app.router.add_post("/producers", self.create_producer)
        app.router.add_get("/producers", self.list_producers)
        app.router.add_delete("/producers/{id}", self.delete_producer)
        app.router.add_post("/producers/{id}/adopt", self.adopt_producer)
        app.router.add_post("/_test/delay", self.set_delay)
        app.router.add_get("/consumers", self.list_consumers)
        app.router.add_delete("/consumers/{id}", self.delete_consumer)
        app.router.add_post("/_test/consumers", self.add_consumer)
        app.router.add_get("/_test/stats", self.stats)
        app.router.add_post("/_test/producers/{id}/mute", self.mute)
        return app

    @web.middleware
    async def _misbehave(self, request: web.Request, handler):
        if self.chaos is None or request.path.startswith("/_test"):
            return await handler(request)
        if self.chaos == "500":
            return web.Response(status=500, text="boom")
        if self.chaos == "slow":
            await asyncio.sleep(30)
        if self.chaos == "badjson":
            return web.Response(status=200 if request.method == "GET" else 201, text="{not json")
        if self.chaos == "wrongshape":
            return web.json_response({"producers": "no"} if request.method == "GET" else [1, 2], status=200)
        if self.chaos == "hugebody":
            return web.Response(status=200, body=b"[" + b" " * (2 << 20) + b"]")
        return await handler(request)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    def _fenced(self, what: str, stream_id: str, epoch: int | None, producers: list[dict]) -> web.Response | None:
        """409 when ``epoch`` is lower than one of ``producers``' (the contract's fencing rule)."""
        newer = [p for p in producers if (p.get("epoch") or 0) > (epoch or 0)]
        if not newer or (epoch is None and what == "create"):  # no epoch on create: not fleet mode
            return None
        self.refused.append({"what": what, "stream_id": stream_id, "epoch": epoch, "at": time.time()})
        return web.json_response({"error": f"stream {stream_id} has a producer of epoch {newer[0]['epoch']}"},
                                 status=409)

    async def create_producer(self, request: web.Request) -> web.Response:
        body = await request.json()
        # A separate task: a slow creation completes even when the caller has given up.
        return await asyncio.shield(self._create(body))

    async def _create(self, body: dict) -> web.Response:
        if self.create_delay:
            await asyncio.sleep(self.create_delay)
        epoch = body.get("epoch")
        same = [p for p in self.producers.values() if p["stream_id"] == body["stream_id"]]
        refused = self._fenced("create", body["stream_id"], epoch, same)
        if refused is not None:
            return refused
        loop = asyncio.get_running_loop()
        counter = RtpCounter(int(body["ssrc"]), int(body["payload_type"]))
        transport, _ = await loop.create_datagram_endpoint(lambda: counter, local_addr=("127.0.0.1", 0))
        pid = f"p{next(_ids)}"
        self.producers[pid] = {"stream_id": body["stream_id"], "counter": counter, "transport": transport,
                               "port": transport.get_extra_info("sockname")[1], "created_at": time.time(),
                               "epoch": epoch, "node": body.get("node")}
        return web.json_response({"producer_id": pid, "rtp_host": "127.0.0.1",
                                  "rtp_port": self.producers[pid]["port"]}, status=201)

    async def adopt_producer(self, request: web.Request) -> web.Response:
        body = await request.json()
        p = self.producers.get(request.match_info["id"])
        if p is None:
            return web.json_response({"error": "no such producer"}, status=404)
        refused = self._fenced("adopt", p["stream_id"], body.get("epoch"), [p])
        if refused is not None:
            return refused
        p["epoch"], p["node"] = body.get("epoch"), body.get("node")
        return web.Response(status=204)

    async def set_delay(self, request: web.Request) -> web.Response:
        self.create_delay = float((await request.json()).get("create", 0))
        return web.json_response({"create": self.create_delay})

    async def list_producers(self, request: web.Request) -> web.Response:
        return web.json_response([
            {"producer_id": pid, "stream_id": p["stream_id"], "ssrc": p["counter"].ssrc,
             "payload_type": p["counter"].payload_type, "packets": p["counter"].packets,
             "bytes": p["counter"].bytes, "score": 10 if p["counter"].packets else 0,
             "rtp_host": "127.0.0.1", "rtp_port": p["port"], "epoch": p["epoch"], "node": p["node"]}
            for pid, p in self.producers.items()])

    async def delete_producer(self, request: web.Request) -> web.Response:
        pid = request.match_info["id"]
        p = self.producers.get(pid)
        if p is None:
            return web.json_response({"error": "no such producer"}, status=404)
        epoch = int(request.query["epoch"]) if "epoch" in request.query else None
        if epoch is not None and (refused := self._fenced("delete", p["stream_id"], epoch, [p])) is not None:
            return refused
        del self.producers[pid]
        p["transport"].close()
        self.deleted.append({"producer_id": pid, "stream_id": p["stream_id"], "epoch": p["epoch"],
                             "node": p["node"], "by_epoch": epoch, "at": time.time()})
        return web.Response(status=204)

    async def list_consumers(self, request: web.Request) -> web.Response:
        return web.json_response([{"consumer_id": cid, **c} for cid, c in self.consumers.items()])

    async def delete_consumer(self, request: web.Request) -> web.Response:
        if self.consumers.pop(request.match_info["id"], None) is None:
            return web.json_response({"error": "no such consumer"}, status=404)
        self.deleted.append({"consumer_id": request.match_info["id"], "at": time.time()})
        return web.Response(status=204)

    async def add_consumer(self, request: web.Request) -> web.Response:
        body = await request.json()
        cid = f"c{next(_ids)}"
        self.consumers[cid] = {"stream_id": body["stream_id"], "client_id": body.get("client_id", ""),
                               "created_at": time.time()}
        return web.json_response({"consumer_id": cid}, status=201)

    async def mute(self, request: web.Request) -> web.Response:
        producer = self.producers.get(request.match_info["id"])
        if producer is None:
            return web.json_response({"error": "no such producer"}, status=404)
        producer["counter"].muted = True
        return web.json_response({"muted": request.match_info["id"]})

    async def stats(self, request: web.Request) -> web.Response:
        out = []
        for pid, p in self.producers.items():
            c = p["counter"]
            out.append({"producer_id": pid, "stream_id": p["stream_id"], "packets": c.packets, "bytes": c.bytes,
                        "lost": c.lost, "mismatched_ssrc": c.mismatched_ssrc, "mismatched_pt": c.mismatched_pt,
                        "malformed": c.malformed, "last_seq": c.last_seq, "ssrc": c.ssrc,
                        "payload_type": c.payload_type})
        return web.json_response({"producers": out, "deleted": self.deleted, "refused": self.refused})


async def main(port: int, chaos: str | None, create_delay: float = 0.0) -> None:
    runner = web.AppRunner(StandinSfu(chaos, create_delay).app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Test stand-in for the operator's MediaSoup app.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chaos", choices=["500", "slow", "badjson", "wrongshape", "hugebody"])
    parser.add_argument("--create-delay", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.chaos, args.create_delay))
