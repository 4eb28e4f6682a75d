"""agent/fleet/etcd.py against a real etcd: leases, exclusive claims, watches, compaction,
authentication and a member dying under the client."""
from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from agent.fleet.etcd import Compacted, EtcdClient, EtcdError, EtcdUnavailable, LeaseLost


@pytest.mark.slow
async def test_a_leased_key_goes_with_its_lease_and_the_watch_sees_it(etcd):
    c = EtcdClient(etcd.endpoints)
    try:
        lease = await c.grant(1)
        ok, kv, revision = await c.create("/t/owners/a", b"x", lease)
        assert ok and kv is not None and kv.create_revision == revision
        events: list = []

        async def follow() -> None:
            async for batch in c.watch("/t/", revision + 1):
                events.extend((e.type, e.kv.key, time.monotonic()) for e in batch)
        task = asyncio.create_task(follow())
        started = time.monotonic()
        for _ in range(100):
            if events:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        assert [(t, k) for t, k, _ in events] == [("delete", "/t/owners/a")]
        print(f"\nlease expiry reached the watcher {events[0][2] - started:.2f}s after the last renewal (TTL 1s)")
        with pytest.raises(LeaseLost):
            await c.keepalive(lease)
        assert await c.get("/t/owners/a") is None
    finally:
        await c.close()


async def test_create_is_exclusive_and_compare_and_delete_needs_the_right_revision(etcd):
    a, b = EtcdClient(etcd.endpoints), EtcdClient(etcd.endpoints)
    try:
        results = await asyncio.gather(*(cl.create("/t/owners/s", name.encode()) for cl, name in ((a, "a"), (b, "b"))))
        winners = [r for r in results if r[0]]
        losers = [r for r in results if not r[0]]
        assert len(winners) == 1 and len(losers) == 1
        holder = losers[0][1]
        assert holder is not None and holder.value == winners[0][1].value  # the loser learns who holds it
        assert not await a.delete_if("/t/owners/s", holder.create_revision + 1)
        assert not await a.replace_if("/t/owners/s", b"z", holder.create_revision + 1)
        assert await a.replace_if("/t/owners/s", b"z", holder.create_revision)
        kvs, rev = await a.get_prefix("/t/")
        assert [kv.value for kv in kvs] == [b"z"] and rev >= holder.mod_revision
        assert await b.delete_if("/t/owners/s", holder.create_revision)
        assert (await a.get_prefix("/t/"))[0] == []
    finally:
        await a.close()
        await b.close()


async def test_a_quiet_watch_is_reopened_without_an_error_and_misses_nothing(etcd):
    """etcd sends nothing while nothing changes: silence is not a failure (even with one endpoint)."""
    c = EtcdClient(etcd.endpoints, watch_silence=0.3)
    other = EtcdClient(etcd.endpoints)
    try:
        revision = await c.put("/t/quiet", b"0")
        seen: list[bytes] = []
        requests_before = c.requests

        async def follow() -> None:
            async for batch in c.watch("/t/", revision + 1):
                seen.extend(e.kv.value for e in batch)
        task = asyncio.create_task(follow())
        await asyncio.sleep(1.5)  # five silences
        assert not task.done(), task.exception()
        await other.put("/t/quiet", b"1")
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)
        assert not task.done() and seen == [b"1"]
        assert c.requests - requests_before >= 4  # it was reopened, not merely waiting
        task.cancel()
    finally:
        await c.close()
        await other.close()


async def test_a_compacted_start_revision_says_so(etcd):
    c = EtcdClient(etcd.endpoints)
    try:
        first = await c.put("/t/k", b"1")
        last = await c.put("/t/k", b"2")
        await c._post("/v3/kv/compaction", {"revision": str(last)})
        with pytest.raises(Compacted) as info:
            async for _ in c.watch("/t/", first):
                pass
        assert info.value.compact_revision == last
    finally:
        await c.close()


async def test_authentication_works_and_never_shows_the_password(etcd):
    url = etcd.endpoints[0]

    def ctl(*args: str) -> None:
        subprocess.run(["etcdctl", f"--endpoints={url}", *args], check=True, capture_output=True, timeout=20)
    ctl("user", "add", "root:R00t-pw")
    ctl("user", "add", "vas:V4s:pw/%@")
    ctl("user", "grant-role", "vas", "root")
    ctl("auth", "enable")
    good = EtcdClient(etcd.endpoints, username="vas", password="V4s:pw/%@")
    bad = EtcdClient(etcd.endpoints, username="vas", password="wrong-Secret-9")
    try:
        assert await good.put("/t/x", b"1") > 0
        with pytest.raises(EtcdError) as info:
            await bad.put("/t/x", b"1")
        assert "wrong-Secret-9" not in str(info.value) and "cannot authenticate as 'vas'" in str(info.value)
        assert "V4s:pw" not in repr(good)
    finally:
        await good.close()
        await bad.close()


@pytest.mark.slow
async def test_the_client_and_its_watch_survive_the_leader_dying(etcd_cluster):
    c = EtcdClient(etcd_cluster.endpoints, timeout=1.0)
    try:
        rev = await c.put("/t/a", b"1")
        seen: list[str] = []

        async def follow() -> None:
            async for batch in c.watch("/t/", rev + 1):
                seen.extend(e.kv.key for e in batch)
        task = asyncio.create_task(follow())
        await asyncio.sleep(0.3)
        etcd_cluster.leader().kill()
        for i in range(50):  # writes go on through another member once a new leader is elected
            try:
                await c.put(f"/t/b{i}", b"2")
                break
            except EtcdError:
                await asyncio.sleep(0.2)
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        assert seen and seen[0].startswith("/t/b")
    finally:
        await c.close()


async def test_no_endpoint_at_all_is_unavailable_quickly(etcd):
    etcd.close()
    c = EtcdClient(etcd.endpoints, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(EtcdUnavailable):
        await c.get("/t/x")
    assert time.monotonic() - started < 10
    await c.close()
