"""History and room info across two edge roles (real aiohttp servers, a real
NATS cluster, history in a real Redis, standalone and Cluster): action ids
unique across edges, one history for the room whichever edge stamped, a
retract on one edge reaching the members of the other, the room listing
counting every edge's members; and the Redis history store on its own."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.client import LiveroomClient
from edge.config import EdgeConfig
from liveroom.distributed import RoleProcess
from liveroom.options import RoleOptions
from liveroom.services import Services
from room_router.bus_nats import NatsBus
from room_router.history import Entry
from room_router.history_redis import RedisHistoryStore
from room_router.inbox import SqliteInbox
from room_router.nodes import MemoryNodeRegistry, MemoryOnlineCounts
from room_router.nodes_redis import RedisOnlineCounts
from room_router.ratelimit import Rate
from room_router.registry import MemoryConnectionRegistry
from state_versions.store import MemoryStateStore
from storage.redis_conn import RedisClient
from tests.natsserver import NatsCluster
from tests.support import API_KEY, JWT_SECRET, token, until

CONFIG = EdgeConfig(action_rate=Rate(500.0, 500), online_interval=0.1)
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


@pytest.fixture
async def two_edges(nats_cluster: NatsCluster, redis_client: RedisClient,
                    tmp_path: Path) -> AsyncIterator[list[RoleProcess]]:
    (tmp_path / "rooms.toml").write_text('[rooms."ch-*"]\nhistory = 10\n')
    store, registry = MemoryStateStore(), MemoryConnectionRegistry()
    nodes, online = MemoryNodeRegistry(), MemoryOnlineCounts()
    inbox = SqliteInbox(tmp_path / "inbox.sqlite3")
    await inbox.open()
    prefix = f"h{time.monotonic_ns()}"
    procs: list[RoleProcess] = []
    try:
        for i in range(2):
            bus = await NatsBus.connect([nats_cluster.urls[i]], prefix=prefix)
            services = Services(bus, store, registry, inbox, nodes, online, [bus.close],
                                history=RedisHistoryStore(redis_client))
            opts = RoleOptions(role="edge", port=0, node_id=f"hedge-{i}", group=f"g{i}",
                               heartbeat=0.2, jwt_secret=JWT_SECRET, api_key=API_KEY,
                               config=CONFIG, big_threshold=1000, data_dir=tmp_path,
                               rooms_config=tmp_path / "rooms.toml")
            procs.append(await RoleProcess(opts, services).start())
        yield procs
    finally:
        for proc in reversed(procs):
            await proc.stop()
        await inbox.close()


async def test_ids_history_retract_and_listing_across_two_edges(
        two_edges: list[RoleProcess], http: aiohttp.ClientSession) -> None:
    room = f"ch-{time.monotonic_ns()}"
    a_edge, b_edge = two_edges
    assert a_edge.node is not None and b_edge.node is not None
    await a_edge.node.store.apply(room, "placement", {"spread": True})  # served by both
    a = await LiveroomClient.connect(a_edge.public_url, token("ca", rooms={room: "moderator"}),
                                     session=http)
    b = await LiveroomClient.connect(b_edge.public_url, token("cb"), codec="json",
                                     session=http)
    assert (await a.join(room))["type"] == "joined"
    assert (await b.join(room))["type"] == "joined"
    for i in range(3):
        await a.action(room, "comment", {"text": f"a{i}"})
        await b.action(room, "comment", {"text": f"b{i}"})
    seen = [await b.expect("action") for _ in range(6)]
    ids = [f["id"] for f in seen]
    assert len(set(ids)) == 6  # no two edges hand out the same id
    # One history for the room: the entries of both edges, in Redis.

    async def history() -> list[str]:
        async with http.get(f"{b_edge.url}/v1/rooms/{room}/history") as r:
            return [f["id"] for f in (await r.json())["history"]]

    await until(lambda: _has(history, set(ids)), 5, "both edges' actions kept")
    # A moderator on edge A retracts an action stamped on edge B.
    victim = next(f for f in seen if f["body"]["text"] == "b2")
    done = await a.request({"type": "moderate", "room": room, "op": "retract",
                            "id": victim["id"]}, "moderated")
    assert done["type"] == "moderated"
    assert (await b.expect("retract"))["id"] == victim["id"]
    assert victim["id"] not in await history()
    # Room info and listing count the members of both edges.

    async def both_counted() -> Any:
        async with http.get(f"{a_edge.url}/v1/rooms?prefix={room}", headers=AUTH) as r:
            page = await r.json()
        return page["rooms"] == [{"room": room, "online": 2}]

    await until(both_counted, 5, "the listing counts both edges")
    async with http.get(f"{b_edge.url}/v1/rooms/{room}", headers=AUTH) as r:
        info = await r.json()
    assert info["online"] == 2 and info["config"]["history"] == 10
    await a.close()
    await b.close()


async def _has(history: Any, want: set[str]) -> bool:
    return want <= set(await history())


async def test_redis_history_store(redis_client: RedisClient) -> None:
    store = RedisHistoryStore(redis_client)
    room = f"rh-{time.monotonic_ns()}"
    for n in range(5):
        await store.append(room, Entry(f"i{n}", 100.0 + n, f"p{n}".encode()), 3, 60, 100.0 + n)
    got = await store.recent(room, 10, 60, 105.0)
    assert [(e.id, e.ts, e.payload) for e in got] == [
        ("i2", 102.0, b"p2"), ("i3", 103.0, b"p3"), ("i4", 104.0, b"p4")]
    assert [e.id for e in await store.recent(room, 2, 60, 105.0)] == ["i3", "i4"]
    assert [e.id for e in await store.recent(room, 10, 2.5, 105.0)] == ["i3", "i4"]
    assert await store.retract(room, "i3")
    assert not await store.retract(room, "i3")
    assert not await store.retract(room, "i0")  # trimmed
    assert [e.id for e in await store.recent(room, 10, 60, 105.0)] == ["i2", "i4"]
    ttl = await redis_client.pttl(f"lr:h:{{{room}}}")
    assert 0 < ttl <= 60_000
    assert await store.recent(f"{room}-none", 10, 60, 105.0) == []


async def test_redis_online_counts_list_rooms(redis_client: RedisClient) -> None:
    counts = RedisOnlineCounts(redis_client)
    tag = f"lr{time.monotonic_ns()}"
    await counts.report(f"{tag}-n1", {f"{tag}-a": 2, f"{tag}-b": 1}, 10, 100.0)
    await counts.report(f"{tag}-n2", {f"{tag}-a": 1, f"{tag}-c": 4}, 10, 100.0)
    await counts.report(f"{tag}-n3", {f"{tag}-d": 1}, 1, 100.0)  # expired at 105
    assert await counts.rooms(tag, "", 2, 105.0) == [(f"{tag}-a", 3), (f"{tag}-b", 1)]
    assert await counts.rooms(tag, f"{tag}-b", 5, 105.0) == [(f"{tag}-c", 4)]
