"""Issue 12 on every StateStore (memory, Redis standalone and Cluster,
PostgreSQL, the two-tier store) on real servers: reads never create a key
or a row, the sections of a room are capped atomically, and the two-tier
store lets an idle room fall out of Redis once PostgreSQL has it, to reload
it on its next read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from state_versions.store import MemoryStateStore, StateStore
from state_versions.store_postgres import PostgresStateStore, open_postgres_store
from state_versions.store_redis import RedisStateStore
from state_versions.store_tiered import TieredStateStore
from storage.redis_conn import open_redis, room_key
from tests.pgserver import PgServer
from tests.redisserver import RedisClusterServers, RedisServer
from tests.state_props import new_room, same
from tests.support import until
from wire.errors import TooManySections

CAP = 3
KINDS = ["memory", "redis", "redis-cluster", "postgres", "tiered"]


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, pg: PgServer, redis_server: RedisServer,
                redis_cluster: RedisClusterServers) -> AsyncIterator[Any]:
    kind = request.param
    closers: list[Any] = []
    s: Any
    if kind == "memory":
        s = MemoryStateStore(max_sections=CAP)
    elif kind in ("redis", "redis-cluster"):
        client = open_redis(redis_server.url if kind == "redis" else redis_cluster.url)
        closers.append(client.aclose)
        s = await RedisStateStore.open(client, max_sections=CAP)
    elif kind == "postgres":
        s = await open_postgres_store(await pg.create_database("cap"), min_size=1,
                                      max_size=4, max_sections=CAP)
        closers.append(s.close)
    else:
        client = open_redis(redis_server.url)
        durable = await open_postgres_store(await pg.create_database("capt"), min_size=1,
                                            max_size=4)
        s = TieredStateStore(await RedisStateStore.open(client, max_sections=CAP), durable)
        closers += [client.aclose, durable.close, s.close]
    yield s
    for close in reversed(closers):
        await close()


async def _held(store: Any, room: str) -> bool:
    """Whether the store keeps anything for ``room``, looked at beneath the
    interface (a key in Redis, a row in PostgreSQL, an entry in memory)."""
    if isinstance(store, MemoryStateStore):
        return len(store) > 0
    if isinstance(store, TieredStateStore):
        return await _held(store.hot, room) or await _held(store.durable, room)
    if isinstance(store, RedisStateStore):
        keys = [room_key("s", room, p) for p in ("t", "v", "d")]
        return any([await store.client.exists(k) for k in keys])
    assert isinstance(store, PostgresStateStore)
    n = await store.pool.fetchval(
        "SELECT (SELECT count(*) FROM rooms WHERE room = $1)"
        " + (SELECT count(*) FROM sections WHERE room = $1)", room)
    return bool(n)


async def test_reads_never_allocate(store: StateStore) -> None:
    room = new_room()
    assert await store.versions(room) == (0, {})
    assert await store.changed_since(room, {"meta": 3}) == (0, [])
    assert await store.section(room, "meta") is None
    snap = await store.snapshot(room)
    assert snap.total == 0 and not snap.sections
    assert not await _held(store, room)


async def test_sections_per_room_are_capped(store: StateStore) -> None:
    room = new_room()
    for i in range(CAP):
        await store.apply(room, f"s{i}", i)
    with pytest.raises(TooManySections) as err:
        await store.apply(room, "one-more", "x")
    assert err.value.extra["limit"] == CAP
    # The refusal changed nothing; writing a section the room has is fine.
    assert await store.versions(room) == (CAP, {f"s{i}": 1 for i in range(CAP)})
    change = await store.apply(room, "s1", "again", expected=1)
    assert (change.partial, change.total) == (2, CAP + 1)


async def test_the_cap_holds_under_concurrent_writers(store: StateStore) -> None:
    room = new_room()
    results = await asyncio.gather(*(store.apply(room, f"c{i}", i) for i in range(12)),
                                   return_exceptions=True)
    applied = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, TooManySections)]
    assert len(applied) == CAP and len(refused) == 12 - CAP, results
    total, versions = await store.versions(room)
    assert total == CAP and len(versions) == CAP


async def test_an_idle_tiered_room_leaves_redis_once_durable_and_reloads(
        pg: PgServer, redis_server: RedisServer) -> None:
    client = open_redis(redis_server.url)
    durable = await open_postgres_store(await pg.create_database("idle"), min_size=1,
                                        max_size=4)
    tiered = TieredStateStore(await RedisStateStore.open(client), durable, idle_ttl=1.0)
    try:
        room = new_room()
        await tiered.apply(room, "meta", {"title": "t"})
        await tiered.apply(room, "score", {"n": 1.5})
        before = await tiered.snapshot(room)
        assert await tiered.write_behind.flush(10)
        total_key = room_key("s", room, "t")

        async def gone() -> bool:
            return not await client.exists(total_key)

        await until(gone, 10, "the idle room to expire from Redis")
        assert not await _held(tiered.hot, room)
        after = await tiered.snapshot(room)  # reloaded from PostgreSQL
        assert tiered.reloads == 1
        assert after.total == before.total and same(dict(after.sections),
                                                    dict(before.sections))
        # Written again, it expires again once that change is recorded.
        await tiered.apply(room, "meta", {"title": "u"})
        assert await tiered.write_behind.flush(10)

        async def expiring() -> bool:
            return bool(await client.pttl(total_key) > 0)

        await until(expiring, 5, "the expiry after the recorded change")
    finally:
        await tiered.close()
        await durable.close()
        await client.aclose()
