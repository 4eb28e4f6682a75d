"""A small etcd v3 client over etcd's JSON gateway (``/v3/...``), on aiohttp.

Only what the fleet needs: leases, keys under a prefix, create-if-absent and
compare-and-delete transactions, and a prefix watch.  Works with etcd 3.4 and
later.  Keys and values travel base64-encoded; int64 fields come as strings.
Several endpoints: one is used until it fails, then the next.  Every request is
bounded by ``timeout``.  A watch that has been quiet for ``watch_silence`` is
reopened from its revision (etcd says nothing while nothing changes, and a
connection dropped by a firewall or NAT says nothing either); only a reopening
that fails counts against the endpoint.  The password never appears in an exception, a repr or a log.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger("vas.fleet")
#: A watch that hears nothing this long is reopened from its revision (quietly: that is not a failure).
WATCH_SILENCE = 15.0


class EtcdError(Exception):
    """etcd answered with an error (the message names the endpoint)."""


class EtcdUnavailable(EtcdError):
    """No endpoint answered."""


class LeaseLost(EtcdError):
    """The lease expired or is unknown."""


class Compacted(EtcdError):
    """A watch's start revision was compacted away."""

    def __init__(self, message: str, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class WatchEvent:
    type: str  # "put" or "delete"
    kv: KeyValue


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def _prefix_end(prefix: str) -> str:
    """The range end covering every key that starts with ``prefix``."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return _b64(b"\0")
    raw[-1] += 1
    return _b64(bytes(raw))


def _kv(item: dict[str, Any]) -> KeyValue:
    return KeyValue(key=base64.b64decode(item.get("key", "")).decode(errors="replace"),
                    value=base64.b64decode(item.get("value", "")),
                    create_revision=int(item.get("create_revision", 0)), mod_revision=int(item.get("mod_revision", 0)),
                    version=int(item.get("version", 0)), lease=int(item.get("lease", 0)))


class EtcdClient:
    """A client of one etcd cluster (``endpoints``: its client URLs)."""

    def __init__(self, endpoints: Sequence[str], *, username: str | None = None, password: str | None = None,
                 timeout: float = 2.0, session: aiohttp.ClientSession | None = None,
                 watch_silence: float = WATCH_SILENCE) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0
        self._username, self._password = username, password
        self._token: str | None = None
        self.timeout = timeout
        self.watch_silence = watch_silence
        self._session = session
        self._own_session = session is None
        self.requests = 0  # requests sent (for figures)
        self.granted_ttl = 0  # the TTL etcd gave the last lease granted

    def __repr__(self) -> str:
        return f"EtcdClient({self.endpoints!r}, username={self._username!r})"

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._current]

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    # -- requests -------------------------------------------------------------------
    async def _post(self, path: str, body: dict[str, Any], *, auth: bool = True) -> dict[str, Any]:
        """POST to the current endpoint, moving on to the next ones on connection errors."""
        errors = []
        for _ in range(len(self.endpoints)):
            endpoint = self.endpoint
            try:
                return await self._post_to(endpoint, path, body, auth=auth)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                errors.append(f"{endpoint}: {type(exc).__name__}{': ' + str(exc) if str(exc) else ''}")
                self._current = (self._current + 1) % len(self.endpoints)
                self._token = None  # tokens are per member until they replicate: take a fresh one
        raise EtcdUnavailable("no etcd endpoint answered: " + "; ".join(errors))

    async def _post_to(self, endpoint: str, path: str, body: dict[str, Any], *, auth: bool) -> dict[str, Any]:
        for attempt in range(2):
            headers = {}
            if auth and self._username is not None:
                if self._token is None:
                    await self._authenticate(endpoint)
                headers["Authorization"] = self._token or ""
            self.requests += 1
            async with self._http().post(endpoint + path, json=body, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                text = await resp.text()
            data = json.loads(text) if text else {}
            if resp.status == 200 and "error" not in data:
                return data
            message = str(data.get("message") or data.get("error") or text[:200] or resp.status)
            if auth and self._username is not None and attempt == 0 and "token" in message and "invalid" in message:
                self._token = None  # expired: authenticate again, once
                continue
            if "lease not found" in message:
                raise LeaseLost(f"etcd {endpoint}: {message}")
            raise EtcdError(f"etcd {endpoint}{path}: {message}")
        raise EtcdError(f"etcd {endpoint}{path}: authentication keeps failing")

    async def _authenticate(self, endpoint: str) -> None:
        self.requests += 1
        async with self._http().post(endpoint + "/v3/auth/authenticate",
                                     json={"name": self._username, "password": self._password},
                                     timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
            text = await resp.text()
        data = json.loads(text) if text else {}
        if resp.status != 200 or not data.get("token"):
            message = str(data.get("message") or data.get("error") or resp.status)
            raise EtcdError(f"etcd {endpoint}: cannot authenticate as {self._username!r}: {message}")
        self._token = data["token"]

    # -- leases ---------------------------------------------------------------------
    async def grant(self, ttl: int) -> int:
        """A new lease's ID; ``granted_ttl`` is the TTL etcd gave it (never less than its minimum, 2 s by
        default, whatever was asked)."""
        data = await self._post("/v3/lease/grant", {"TTL": int(ttl)})
        self.granted_ttl = int(data.get("TTL") or ttl)
        return int(data["ID"])

    async def keepalive(self, lease: int) -> int:
        data = await self._post("/v3/lease/keepalive", {"ID": str(lease)})
        result = data.get("result", data)
        ttl = int(result.get("TTL", 0))
        if ttl <= 0:
            raise LeaseLost(f"etcd {self.endpoint}: lease {lease:x} expired")
        return ttl

    async def revoke(self, lease: int) -> None:
        try:
            await self._post("/v3/lease/revoke", {"ID": str(lease)})
        except LeaseLost:
            pass

    # -- keys -----------------------------------------------------------------------
    async def get(self, key: str) -> KeyValue | None:
        data = await self._post("/v3/kv/range", {"key": _b64(key)})
        kvs = data.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        data = await self._post("/v3/kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix)})
        return [_kv(i) for i in data.get("kvs") or []], int(data["header"]["revision"])

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        data = await self._post("/v3/kv/put", body)
        return int(data["header"]["revision"])

    async def _txn(self, key: str, compare: dict[str, Any], success: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        data = await self._post("/v3/kv/txn", {"compare": [{"key": _b64(key), **compare}], "success": [success],
                                               "failure": [{"request_range": {"key": _b64(key)}}]})
        return bool(data.get("succeeded")), data

    async def create(self, key: str, value: bytes, lease: int = 0) -> tuple[bool, KeyValue | None, int]:
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        ok, data = await self._txn(key, {"target": "CREATE", "result": "EQUAL", "create_revision": "0"},
                                   {"request_put": put})
        revision = int(data["header"]["revision"])
        if ok:
            return True, KeyValue(key, value, revision, revision, 1, lease), revision
        kvs = ((data.get("responses") or [{}])[0].get("response_range") or {}).get("kvs") or []
        return False, _kv(kvs[0]) if kvs else None, revision

    async def delete_if(self, key: str, create_revision: int) -> bool:
        ok, _ = await self._txn(key, {"target": "CREATE", "result": "EQUAL", "create_revision": str(create_revision)},
                                {"request_delete_range": {"key": _b64(key)}})
        return ok

    async def replace_if(self, key: str, value: bytes, create_revision: int, lease: int = 0) -> bool:
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        ok, _ = await self._txn(key, {"target": "CREATE", "result": "EQUAL", "create_revision": str(create_revision)},
                                {"request_put": put})
        return ok

    async def status(self) -> dict[str, Any]:
        return await self._post("/v3/maintenance/status", {})

    # -- watch ------------------------------------------------------------------------
    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        """Batches of events under ``prefix`` from ``start_revision`` on, resumed across broken streams."""
        revision = start_revision
        failures = 0
        while True:
            endpoint = self.endpoint
            opened = False
            try:
                async for events in self._watch_once(endpoint, prefix, revision):
                    opened, failures = True, 0  # etcd confirmed the watch (or sent events)
                    if events:
                        revision = events[-1].kv.mod_revision + 1
                        yield events
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                if opened and isinstance(exc, TimeoutError):
                    log.debug("etcd watch on %s quiet for %gs: reopening it", endpoint, self.watch_silence)
                    continue  # the same endpoint, from the same revision
                log.debug("etcd watch on %s broke: %r", endpoint, exc)
                failures += 1
                self._current = (self._current + 1) % len(self.endpoints)
                self._token = None
                if failures >= len(self.endpoints):
                    raise EtcdUnavailable(f"no etcd endpoint keeps a watch: last {endpoint}: {exc!r}") from None
                await asyncio.sleep(0.1)

    async def _watch_once(self, endpoint: str, prefix: str, revision: int) -> AsyncIterator[list[WatchEvent]]:
        headers = {}
        if self._username is not None:
            if self._token is None:
                await self._authenticate(endpoint)
            headers["Authorization"] = self._token or ""
        body = {"create_request": {"key": _b64(prefix), "range_end": _prefix_end(prefix),
                                   "start_revision": str(revision), "progress_notify": True}}
        self.requests += 1
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=self.watch_silence)
        async with self._http().post(endpoint + "/v3/watch", json=body, headers=headers, timeout=timeout) as resp:
            if resp.status != 200:
                raise EtcdError(f"etcd {endpoint}/v3/watch: HTTP {resp.status}: {(await resp.text())[:200]}")
            async for line in resp.content:
                if not line.strip():
                    continue
                data = json.loads(line)
                if "error" in data:
                    message = str((data["error"] or {}).get("message") if isinstance(data["error"], dict)
                                  else data["error"])
                    raise EtcdError(f"etcd {endpoint}/v3/watch: {message}")
                result = data.get("result") or {}
                if int(result.get("compact_revision", 0)):
                    raise Compacted(f"etcd {endpoint}: revision {revision} is compacted",
                                    int(result["compact_revision"]))
                if result.get("canceled"):
                    raise EtcdError(f"etcd {endpoint}/v3/watch canceled: {result.get('cancel_reason', '')}")
                yield [WatchEvent("delete" if e.get("type") == "DELETE" else "put", _kv(e.get("kv") or {}))
                       for e in result.get("events") or []]
        raise aiohttp.ClientPayloadError("watch stream ended")
