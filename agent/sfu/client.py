"""The SFU's HTTP contract, as a client (docs/mediasoup-contract.md).

Bounded everywhere: every call has a timeout, bodies are read up to
``max_body`` bytes, and idempotent calls (GET, DELETE) are retried a few
times with a short exponential wait (:func:`retry_wait`).  ``POST /producers`` is not
retried: a lost answer would make a duplicate; the producer manager lists
and reconciles instead.  Every failure is one :class:`SfuError` whose
message names the call and what went wrong; shapes are checked by the pure
``parse_*`` functions.
"""
from __future__ import annotations

import asyncio
import json
import traceback
from dataclasses import dataclass
from typing import Any

import aiohttp

from agent.redact import redact_url


class SfuError(Exception):
    """A contract call failed: ``METHOD /path: what happened``."""


class _Transient(SfuError):
    """Worth another try: connection refused or reset, a timeout, a 5xx."""


def retry_wait(attempt: int) -> float:
    """Seconds to wait after failed try ``attempt`` (1-based) of an idempotent call: 0.2, 0.4,
    0.8, 1.6, then 2 s at most."""
    return min(2.0, 0.2 * 2 ** min(attempt - 1, 4))


def _let_go(exc: BaseException | None) -> None:
    """Keep only the message: clear the frames of ``exc``'s chain.  aiohttp and aiohappyeyeballs
    keep the error they raise in a local of a frame on its own traceback: a reference cycle per
    try while the SFU refuses connections."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)  # a frame still running (ours) is skipped
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__


@dataclass(frozen=True)
class ProducerAddress:
    """``POST /producers``: where the new producer listens."""

    producer_id: str
    rtp_host: str
    rtp_port: int


@dataclass(frozen=True)
class ProducerStats:
    """One item of ``GET /producers``."""

    producer_id: str
    stream_id: str
    ssrc: int
    payload_type: int
    packets: int
    bytes: int
    score: float | None
    rtp_host: str
    rtp_port: int
    #: Fleet mode: the ownership epoch and the node that registered it (None: not echoed, or no fleet).
    epoch: int | None = None
    node: str | None = None
    #: The remote port comedia locked the transport to (None: nothing received yet, or not echoed).
    source_port: int | None = None
    #: The H.264 profile-level-id it was made with (None: none announced, or not echoed).
    profile_level_id: str | None = None


@dataclass(frozen=True)
class ConsumerInfo:
    """One item of ``GET /consumers``."""

    consumer_id: str
    stream_id: str
    client_id: str
    created_at: float


# -- shapes (pure) --------------------------------------------------------------
def _field(item: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise SfuError(f"{where}: {key!r} must be {_kind_name(kind)}, got {value!r:.40}")
    if isinstance(value, int) and (value < 0 or (key == "rtp_port" and not 1 <= value <= 65535)):
        raise SfuError(f"{where}: {key!r} out of range: {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return "a string" if kind is str else "an integer" if kind is int else "a number"


def _items(body: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(body, list) or not all(isinstance(i, dict) for i in body):
        raise SfuError(f"{where}: expected a list of objects")
    return body


def parse_address(body: Any, where: str = "POST /producers") -> ProducerAddress:
    """The answer to ``POST /producers``."""
    if not isinstance(body, dict):
        raise SfuError(f"{where}: expected an object")
    return ProducerAddress(_field(body, "producer_id", str, where), _field(body, "rtp_host", str, where),
                           _field(body, "rtp_port", int, where))


def parse_producers(body: Any, where: str = "GET /producers") -> list[ProducerStats]:
    """The answer to ``GET /producers``."""
    out = []
    for n, item in enumerate(_items(body, where)):
        at = f"{where}: item {n}"
        score = item.get("score")
        out.append(ProducerStats(
            _field(item, "producer_id", str, at), _field(item, "stream_id", str, at), _field(item, "ssrc", int, at),
            _field(item, "payload_type", int, at) if "payload_type" in item else 96,
            _field(item, "packets", int, at), _field(item, "bytes", int, at),
            float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None,
            _field(item, "rtp_host", str, at), _field(item, "rtp_port", int, at),
            _field(item, "epoch", int, at) if item.get("epoch") is not None else None,
            _field(item, "node", str, at) if item.get("node") is not None else None,
            _port(item, "source_port", at), _profile(item.get("profile_level_id"))))
    return out


def _port(item: dict[str, Any], key: str, where: str) -> int | None:
    """An optional UDP port: None when absent or null; an error when it is not a port."""
    if item.get(key) is None:
        return None
    value = _field(item, key, int, where)
    if not 1 <= value <= 65535:
        raise SfuError(f"{where}: {key!r} out of range: {value!r}")
    return int(value)


def _profile(value: Any) -> str | None:
    """An H.264 profile-level-id (six hex digits, lower case), or None for anything else."""
    if isinstance(value, str) and len(value) == 6 and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    return None


def parse_consumers(body: Any, where: str = "GET /consumers") -> list[ConsumerInfo]:
    """The answer to ``GET /consumers``."""
    out = []
    for n, item in enumerate(_items(body, where)):
        at = f"{where}: item {n}"
        out.append(ConsumerInfo(_field(item, "consumer_id", str, at), _field(item, "stream_id", str, at),
                                str(item.get("client_id", "")), float(_field(item, "created_at", (int, float), at))))
    return out


def _fence(epoch: int | None, node: str | None) -> dict[str, Any]:
    """The fleet fields of a producer registration (none outside fleet mode)."""
    return {**({"epoch": epoch} if epoch else {}), **({"node": node} if node else {})}


# -- the client -------------------------------------------------------------------
class SfuClient:
    """Talks to the SFU at ``api_url``; one session, created on first use; ``close()`` twice is fine."""

    def __init__(self, api_url: str, *, timeout: float = 5.0, attempts: int = 3, max_body: int = 1 << 20) -> None:
        self.api_url, self.timeout, self.attempts, self.max_body = api_url.rstrip("/"), timeout, attempts, max_body
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def health(self) -> bool:
        """True when ``GET /health`` answers 200 within the timeout; never raises."""
        try:
            status, _ = await self._call("GET", "/health", expect=(200,), parse=False, timeout=min(self.timeout, 2.0))
        except SfuError:
            return False
        return status == 200

    async def create_producer(self, stream_id: str, *, ssrc: int, payload_type: int,
                              epoch: int | None = None, node: str | None = None,
                              profile_level_id: str | None = None) -> ProducerAddress:
        body: dict[str, Any] = {"stream_id": stream_id, "kind": "video", "codec": "H264",
                                "payload_type": payload_type, "ssrc": ssrc}
        if profile_level_id:  # the stream's real H.264 profile: a router without Baseline accepts it
            body["profile_level_id"] = profile_level_id
        body.update(_fence(epoch, node))  # fleet mode: a stale owner cannot replace the new owner's producer
        _, answer = await self._call("POST", "/producers", json_body=body, expect=(200, 201))
        return parse_address(answer)

    async def adopt_producer(self, producer_id: str, *, epoch: int | None, node: str | None) -> None:
        """Fleet mode: re-register an existing producer under ``epoch`` (409 if it has a higher one)."""
        await self._retried("POST", f"/producers/{producer_id}/adopt", json_body=_fence(epoch, node),
                            expect=(200, 204), parse=False)

    async def producers(self) -> list[ProducerStats]:
        return parse_producers((await self._retried("GET", "/producers", expect=(200,)))[1])

    async def delete_producer(self, producer_id: str, *, epoch: int | None = None) -> bool:
        """False when it was already gone (404); fenced by ``epoch`` (409 if the producer's is higher)."""
        path = f"/producers/{producer_id}" + (f"?epoch={epoch}" if epoch else "")
        status, _ = await self._retried("DELETE", path, expect=(200, 204, 404), parse=False)
        return status != 404

    async def consumers(self) -> list[ConsumerInfo]:
        return parse_consumers((await self._retried("GET", "/consumers", expect=(200,)))[1])

    async def delete_consumer(self, consumer_id: str) -> bool:
        status, _ = await self._retried("DELETE", f"/consumers/{consumer_id}", expect=(200, 204, 404), parse=False)
        return status != 404

    async def _retried(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        # A plain loop, not a retrying object per call: the agent lists producers and consumers
        # about once a second, and tenacity's object is ~30 objects in reference cycles each time.
        attempts = max(1, self.attempts)
        for attempt in range(1, attempts + 1):
            try:
                return await self._call(method, path, **kw)
            except _Transient:
                if attempt == attempts:
                    raise  # the last error, as it was
            await asyncio.sleep(retry_wait(attempt))  # outside ``except``: the error is let go first
        raise AssertionError("unreachable")

    async def _call(self, method: str, path: str, *, expect: tuple[int, ...], parse: bool = True,
                    json_body: Any = None, timeout: float | None = None) -> tuple[int, Any]:
        where = f"{method} {path}"
        limit = timeout or self.timeout
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.request(method, self.api_url + path, json=json_body,
                                             timeout=aiohttp.ClientTimeout(total=limit)) as resp:
                data, status = await _read_bounded(resp, self.max_body), resp.status
        except TimeoutError:
            raise _Transient(f"{where}: timed out after {limit:g}s") from None
        except aiohttp.ClientError as exc:
            message = f"{where}: {redact_url(str(exc)) or type(exc).__name__}"
            _let_go(exc)
            raise _Transient(message) from None
        if len(data) > self.max_body:
            raise SfuError(f"{where}: body larger than {self.max_body >> 20} MiB")
        if status not in expect:
            error = _Transient if status >= 500 else SfuError
            raise error(f"{where}: {status} {data[:120].decode('utf-8', 'replace')}".rstrip())
        if not parse:
            return status, None
        try:
            return status, json.loads(data)
        except ValueError:
            raise SfuError(f"{where}: malformed JSON") from None


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, but no more than ``limit`` + 1 bytes (enough to tell it was too big)."""
    data = b""
    while len(data) <= limit:
        chunk = await resp.content.read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return data
