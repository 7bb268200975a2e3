"""The Redis state store on a real standalone Redis and a real 3-master
Cluster, beyond the shared properties (test_state_store_properties.py):
values, refusals, concurrency from several clients, and the epoch when Redis
loses data (a restarted server, one restarted Cluster master)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from state_versions.store_redis import RedisStateStore, slot_tags
from storage.redis_conn import RedisClient, open_redis
from tests.redisserver import RedisClusterServers, RedisServer, when_up
from tests.state_props import new_room, same
from wire.errors import VersionConflict


@pytest.fixture
async def store(redis_client: RedisClient) -> AsyncIterator[RedisStateStore]:
    yield await RedisStateStore.open(redis_client)


async def test_values_read_back_equal_and_of_the_same_types(store: RedisStateStore) -> None:
    room = new_room()
    value = {"z": 1e23, "a": [1e16, -0.0, 5e-324, 2**64 - 1, -(2**63), 1.0],
             "nul": "a\x00b", "text": "é\u2028😀", "none": None, "t": True,
             "bytes": b"\x00\xff", 7: "an int key"}
    await store.apply(room, "meta", value)
    for got in [(await store.section(room, "meta")),
                (await store.snapshot(room)).sections["meta"],
                (await store.changed_since(room, {}))[1][0]]:
        assert got is not None and same(got.value, value)
        assert list(got.value) == list(value)


async def test_a_value_that_does_not_pack_is_refused_and_changes_nothing(
        store: RedisStateStore) -> None:
    room = new_room()
    await store.apply(room, "meta", 1)
    for bad in [2**70, object(), {"k": {1, 2}}]:
        with pytest.raises((ValueError, TypeError, OverflowError)):
            await store.apply(room, "meta", bad)
    assert await store.versions(room) == (1, {"meta": 1})


async def test_compare_and_set_conflicts_carry_the_current_versions(
        store: RedisStateStore) -> None:
    room = new_room()
    await store.apply(room, "pinned", "x", expected=0)  # create only
    with pytest.raises(VersionConflict) as info:
        await store.apply(room, "pinned", "y", expected=0)
    assert info.value.extra == {"section": "pinned", "current": 1, "total": 1}
    await store.apply(room, "meta", "m")
    for expected in [2**70, -1, 5]:
        with pytest.raises(VersionConflict) as info:
            await store.apply(room, "pinned", "y", expected=expected)
        assert info.value.extra == {"section": "pinned", "current": 1, "total": 2}
    empty = new_room()
    with pytest.raises(VersionConflict):
        await store.apply(empty, "meta", "m", expected=3)
    assert await store.versions(empty) == (0, {})
    total, outdated = await store.changed_since(room, {"meta": 2**70, "pinned": 1, "nosuch": 9})
    assert total == 2 and [s.name for s in outdated] == ["meta"]
    assert await store.section(empty, "meta") is None


async def test_concurrent_applies_from_several_clients_have_no_gaps_or_duplicates(
        redis_url: str) -> None:
    clients = [open_redis(redis_url) for _ in range(3)]
    try:
        stores = [await RedisStateStore.open(c) for c in clients]
        assert len({s.epoch for s in stores}) == 1
        room = new_room()
        changes = await asyncio.gather(*(
            stores[i % 3].apply(room, f"s{i % 4}", i) for i in range(150)))
        assert sorted(c.total for c in changes) == list(range(1, 151))
        for s in range(4):
            assert sorted(c.partial for c in changes if c.section == f"s{s}") == \
                list(range(1, len([c for c in changes if c.section == f"s{s}"]) + 1))
        total, versions = await stores[0].versions(room)
        assert total == 150 == sum(versions.values())
        # Compare-and-set races: exactly one winner per version.
        results = await asyncio.gather(*(
            stores[i % 3].apply(room, "cas", i, expected=0) for i in range(9)),
            return_exceptions=True)
        assert sum(not isinstance(r, BaseException) for r in results) == 1
        assert all(isinstance(r, VersionConflict) for r in results
                   if isinstance(r, BaseException))
    finally:
        for c in clients:
            await c.aclose()


# --------------------------------------------------------------------------
# The epoch: Redis lost its data
# --------------------------------------------------------------------------
async def test_a_restarted_empty_redis_renews_the_epoch_and_every_process_adopts_it() -> None:
    with RedisServer() as srv:
        a_client, b_client = open_redis(srv.url), open_redis(srv.url)
        try:
            a = await RedisStateStore.open(a_client)
            b = await RedisStateStore.open(b_client)
            old = a.epoch
            assert b.epoch == old and old
            room = new_room()
            for i in range(5):
                await a.apply(room, "meta", i)
            assert (await b.versions(room))[0] == 5
            await asyncio.to_thread(srv.restart)
            # The first process to touch the store after the loss finds its
            # slot's marker gone and renews the epoch; the versions restart.
            change = await when_up(lambda: a.apply(room, "meta", "after"))
            assert a.epoch != old and a.epoch_changes == 1
            assert (change.partial, change.total) == (1, 1)
            # The other process meets the new marker and adopts it: a client
            # that presents the old epoch is no longer told it is current.
            assert await when_up(lambda: b.versions(room)) == (1, {"meta": 1})
            assert b.epoch == a.epoch and b.epoch_changes == 1
            # A process that starts now reads the same epoch.
            c = await RedisStateStore.open(a_client)
            assert c.epoch == a.epoch
        finally:
            await a_client.aclose()
            await b_client.aclose()


async def test_a_restarted_cluster_master_renews_the_epoch_and_keeps_other_slots() -> None:
    with RedisClusterServers() as cluster:
        client = open_redis(cluster.url)
        assert isinstance(client, RedisCluster)
        try:
            a = await RedisStateStore.open(client)
            b = await RedisStateStore.open(open_redis(cluster.url))
            old = a.epoch
            # Rooms until there is at least one on each master.
            by_port: dict[int, str] = {}
            while len(by_port) < len(cluster.nodes):
                room = new_room()
                node = client.get_node_from_key(f"lr:s:{{{room}}}:t")
                by_port.setdefault(node.port, room)
            for room in by_port.values():
                for i in range(3):
                    await a.apply(room, "meta", i)
            lost_port = cluster.nodes[1].port
            await asyncio.to_thread(cluster.restart, 1)
            lost, kept = by_port[lost_port], [r for p, r in by_port.items() if p != lost_port]
            # A room on a surviving master still answers its versions, under
            # the old epoch until someone meets the loss.
            assert await when_up(lambda: b.versions(kept[0])) == (3, {"meta": 3})
            assert await when_up(lambda: a.versions(lost)) == (0, {})
            assert a.epoch != old
            # The surviving slots keep their versions under the new epoch;
            # the other process adopts it on its next operation.
            for room in kept:
                assert await b.versions(room) == (3, {"meta": 3})
            assert b.epoch == a.epoch
            # Every slot's marker holds the new epoch.
            markers = await asyncio.gather(*(client.get(f"lr:e:{{{t}}}")
                                             for t in slot_tags()[::512]))
            assert {m.decode() for m in markers if m is not None} == {a.epoch}
            await b.client.aclose()
        finally:
            await client.aclose()
