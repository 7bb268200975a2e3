"""The two-tier state store (Redis hot, PostgreSQL durable) on real
servers: every applied change reaches the PostgreSQL history off the apply
path; a Redis that restarted empty is refilled from PostgreSQL under a new
epoch; the write-behind never blocks an apply, overflows by counting, and
catches up when the database is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from state_versions.store_postgres import PostgresStateStore, open_postgres_store
from state_versions.store_redis import RedisStateStore
from state_versions.store_tiered import TieredStateStore
from storage.redis_conn import open_redis
from tests.pgserver import PgServer
from tests.redisserver import RedisClusterServers, RedisServer, when_up
from tests.state_props import new_room, same


@pytest.fixture
async def durable(pg: PgServer) -> AsyncIterator[PostgresStateStore]:
    store = await open_postgres_store(await pg.create_database("tier"), min_size=1, max_size=4)
    yield store
    await store.close()


async def test_every_change_reaches_the_postgresql_history(
        redis_server: RedisServer, durable: PostgresStateStore) -> None:
    client = open_redis(redis_server.url)
    tiered = TieredStateStore(await RedisStateStore.open(client), durable, batch=7)
    try:
        rooms = [new_room() for _ in range(3)]
        applied = {r: [] for r in rooms}  # type: ignore[var-annotated]
        for i in range(60):
            room = rooms[i % 3]
            applied[room].append(await tiered.apply(room, f"s{i % 4}", {"i": i, "f": 0.5}))
        assert await tiered.write_behind.flush(10)
        assert tiered.write_behind.written == 60 and tiered.write_behind.dropped == 0
        for room in rooms:
            assert same(await durable.history(room), applied[room])
            hot, cold = await tiered.snapshot(room), await durable.snapshot(room)
            assert hot.total == cold.total == 20
            assert same(dict(hot.sections), dict(cold.sections))
        # A value PostgreSQL cannot hold (not JSON) is skipped and counted,
        # and does not stop the queue.
        room = rooms[0]
        await tiered.apply(room, "raw", b"\x00bytes")
        await tiered.apply(room, "meta", "after")
        assert await tiered.write_behind.flush(10)
        assert tiered.write_behind.skipped == 1
        assert [c.total for c in await durable.history(room)][-2:] == [20, 22]
    finally:
        await tiered.close()
        await client.aclose()


async def test_a_redis_that_restarted_empty_is_refilled_from_postgresql(
        durable: PostgresStateStore) -> None:
    with RedisServer() as srv:
        client = open_redis(srv.url)
        tiered = TieredStateStore(await RedisStateStore.open(client), durable)
        try:
            room, quiet = new_room(), new_room()
            for i in range(9):
                await tiered.apply(room, ["meta", "pinned", "stage"][i % 3], [i, str(i)])
            before_epoch = tiered.epoch
            before = await tiered.snapshot(room)
            assert await tiered.versions(quiet) == (0, {})
            assert await tiered.write_behind.flush(10)

            await asyncio.to_thread(srv.restart)
            # The first read after the loss: a new epoch, the room's latest
            # values and partials back from PostgreSQL.
            after = await when_up(lambda: tiered.snapshot(room))
            assert tiered.epoch != before_epoch
            assert after.total == before.total == 9
            assert same(dict(after.sections), dict(before.sections))
            assert tiered.reloads == 1
            # A room PostgreSQL does not know stays empty (and is not
            # reloaded again on every read).
            assert await tiered.versions(quiet) == (0, {})
            assert await tiered.versions(quiet) == (0, {})
            assert tiered.reloads == 1
            # Versions go on from there, and the history with them.
            change = await tiered.apply(room, "meta", "next")
            assert (change.partial, change.total) == (4, 10)
            assert await tiered.write_behind.flush(10)
            assert [c.total for c in await durable.history(room)] == list(range(1, 11))
        finally:
            await tiered.close()
            await client.aclose()


async def test_the_write_behind_never_blocks_an_apply_and_catches_up(
        redis_server: RedisServer) -> None:
    with PgServer() as own:
        durable = await open_postgres_store(await own.create_database("down"),
                                            min_size=1, max_size=2)
        client = open_redis(redis_server.url)
        tiered = TieredStateStore(await RedisStateStore.open(client), durable,
                                  max_pending=10, batch=5)
        try:
            room = new_room()
            await tiered.apply(room, "scoreboard", 0)
            assert await tiered.write_behind.flush(10)
            await asyncio.to_thread(own.stop)
            slowest = 0.0
            for i in range(1, 41):
                t0 = time.monotonic()
                await tiered.apply(room, "scoreboard", i)
                slowest = max(slowest, time.monotonic() - t0)
            wb = tiered.write_behind
            # The database is down: applies went on at Redis speed; the queue
            # stayed within its bound and counted what it could not keep.
            assert slowest < 1.0, slowest
            assert wb.pending <= 10 + 5
            assert wb.dropped == 41 - wb.pending - wb.written
            assert wb.dropped >= 40 - 15
            kept = wb.pending
            await asyncio.to_thread(own.start)
            assert await wb.flush(20)
            assert wb.written == 1 + kept and wb.failures >= 1
            # (The pool may still hold a connection from before the restart.)
            history = await when_up(lambda: durable.history(room))
            # What was kept is recorded; the newest changes were the dropped ones.
            assert [c.value for c in history] == list(range(1 + kept))
        finally:
            await tiered.close()
            await client.aclose()
            await durable.close()


async def test_a_restarted_cluster_master_has_its_rooms_refilled_from_postgresql(
        durable: PostgresStateStore) -> None:
    with RedisClusterServers() as cluster:
        client = open_redis(cluster.url)
        assert isinstance(client, RedisCluster)
        tiered = TieredStateStore(await RedisStateStore.open(client), durable)
        try:
            by_port: dict[int, str] = {}
            while len(by_port) < len(cluster.nodes):
                room = new_room()
                by_port.setdefault(client.get_node_from_key(f"lr:s:{{{room}}}:t").port, room)
            for room in by_port.values():
                for i in range(4):
                    await tiered.apply(room, f"s{i % 2}", {"i": i})
            before = {room: await tiered.snapshot(room) for room in by_port.values()}
            assert await tiered.write_behind.flush(10)
            epoch = tiered.epoch

            await asyncio.to_thread(cluster.restart, 2)
            lost = by_port[cluster.nodes[2].port]
            for room in by_port.values():
                after = await when_up(lambda room=room: tiered.snapshot(room))  # type: ignore[misc]
                assert after.total == before[room].total == 4
                assert same(dict(after.sections), dict(before[room].sections))
            # Only the lost master's room came from PostgreSQL; all under a new epoch.
            assert tiered.reloads == 1 and tiered.epoch != epoch
            assert (await tiered.apply(lost, "s0", "next")).total == 5
        finally:
            await tiered.close()
            await client.aclose()
