"""The Redis registries (connections, nodes, online counts) on a real
standalone Redis and a real 3-master Redis Cluster: the same answers as the
in-memory ones, expiry, and rebuilding from heartbeats after Redis lost its
data."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from room_router.nodes import MemoryNodeRegistry, MemoryOnlineCounts, NodeInfo
from room_router.nodes_redis import RedisNodeRegistry, RedisOnlineCounts
from room_router.registry import MemoryConnectionRegistry
from room_router.registry_redis import RedisConnectionRegistry
from storage.redis_conn import RedisClient, open_redis
from tests.redisserver import RedisClusterServers, RedisServer, eventually, when_up
from tests.state_props import PROPERTY


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------
# Connection registry
# --------------------------------------------------------------------------
async def test_connection_registry_answers_like_the_memory_one(redis_client: RedisClient) -> None:
    redis_reg = RedisConnectionRegistry(redis_client, ttl=30)
    memory = MemoryConnectionRegistry()
    a, b = uid("user"), uid("user")
    script: list[tuple[str, str, str, int]] = [
        ("add", a, "n1", 1), ("add", a, "n1", 2), ("add", a, "n2@odd:id", 3),
        ("add", b, "n2@odd:id", 4), ("remove", a, "n1", 1), ("remove", a, "n9", 9),
        ("remove", a, "n2@odd:id", 3), ("remove", a, "n1", 2), ("add", a, "n3", 5),
    ]
    for op, user, node, cid in script:
        for reg in (redis_reg, memory):
            await getattr(reg, op)(user, node, cid)
        for user_ in (a, b, uid("nobody")):
            assert await redis_reg.nodes(user_) == await memory.nodes(user_)
    assert await redis_reg.nodes(b) == {"n2@odd:id"}


async def test_connections_expire_unless_refreshed(redis_client: RedisClient) -> None:
    reg = RedisConnectionRegistry(redis_client, ttl=0.4)
    alive, dead = uid("user"), uid("user")
    await reg.add(alive, "live-node", 1)
    await reg.add(dead, "dead-node", 2)
    assert await reg.nodes(dead) == {"dead-node"}
    # The live node's heartbeat refreshes its entries; the dead one's lapse.
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.8:
        assert await reg.refresh("live-node", [(alive, 1)]) == 1
        await asyncio.sleep(0.1)
    assert await reg.nodes(alive) == {"live-node"}

    async def dead_gone() -> bool:
        return await reg.nodes(dead) == set()
    await eventually(dead_gone, timeout=3)
    # The whole key went with its last member.
    assert await redis_client.exists(f"lr:c:{{u:{dead}}}") == 0


async def test_refresh_reasserts_many_users_in_chunks(redis_client: RedisClient) -> None:
    reg = RedisConnectionRegistry(redis_client, ttl=30)
    users = [uid("u") for _ in range(1200)]
    conns = [(u, i) for i, u in enumerate(users)] + [(users[0], 99999)]
    assert await reg.refresh("edge-1", conns) == len(users)
    for u in (users[0], users[600], users[-1]):
        assert await reg.nodes(u) == {"edge-1"}
    await reg.remove(users[0], "edge-1", 0)
    assert await reg.nodes(users[0]) == {"edge-1"}  # its second connection
    assert await reg.refresh("edge-1", []) == 0


def test_a_bad_ttl_is_refused() -> None:
    with pytest.raises(ValueError):
        RedisConnectionRegistry(None, ttl=0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Node registry and online counts: the memory implementations' scenarios
# --------------------------------------------------------------------------
async def test_node_registry_answers_like_the_memory_one(redis_client: RedisClient) -> None:
    # Every test's nodes live in the one {nodes} slot: start from a clean one.
    await redis_client.delete("lr:{nodes}:exp", "lr:{nodes}:info")
    for reg in (MemoryNodeRegistry(), RedisNodeRegistry(redis_client)):
        b = NodeInfo("b", "g1", "ws://b/ws")
        a = NodeInfo("a", "g1", "ws://a/ws", roles=("edge", "router"))
        await reg.heartbeat(b, ttl=3, now=1000)
        await reg.heartbeat(a, ttl=3, now=1001)
        assert await reg.live(1002) == [a, b]
        assert await reg.live(1003.5) == [a]  # b expired at 1003
        assert await reg.live(1004) == []  # expires <= now is dead
        await reg.heartbeat(a, ttl=3, now=1004)
        assert await reg.live(1004) == [a]
        await reg.remove("a")
        await reg.remove("never-was")
        assert await reg.live(1004) == []
    # The expired and removed entries left nothing behind.
    assert await redis_client.hlen("lr:{nodes}:info") == 0


async def test_online_counts_answer_like_the_memory_ones(redis_client: RedisClient) -> None:
    r, s, t = uid("room"), uid("room"), uid("room")
    n1, n2 = uid("node"), uid("node")
    now = time.time()  # the hashes' own TTLs are real time
    for oc in (MemoryOnlineCounts(), RedisOnlineCounts(redis_client)):
        await oc.report(n1, {r: 2, s: 1}, ttl=30, now=now)
        await oc.report(n2, {r: 5, t: 0}, ttl=30, now=now + 2)
        assert await oc.totals([r, s, t], now=now + 2) == {r: 7, s: 1, t: 0}
        # n1's report expires; a fresh report replaces the old one whole.
        assert await oc.totals([r, s], now=now + 31) == {r: 5, s: 0}
        await oc.report(n2, {s: 4}, ttl=30, now=now + 31)
        assert await oc.totals([r, s], now=now + 31) == {r: 0, s: 4}
        assert await oc.totals([], now=now) == {}


async def test_online_counts_of_a_big_room_sum_over_many_nodes(redis_client: RedisClient) -> None:
    room, now = uid("big"), time.time()
    oc = RedisOnlineCounts(redis_client)
    nodes = [uid("edge") for _ in range(20)]
    for i, node in enumerate(nodes):
        await oc.report(node, {room: i + 1, uid("small"): 1}, ttl=30, now=now)
    assert (await oc.totals([room], now=now))[room] == sum(range(1, 21))
    # A node whose process restarts with the same id replaces its report.
    await oc.report(nodes[0], {}, ttl=30, now=now)
    assert (await oc.totals([room], now=now))[room] == sum(range(2, 21))


async def test_many_rooms_report_and_total_in_chunks(redis_client: RedisClient) -> None:
    rooms = {uid("r"): i % 7 + 1 for i in range(1300)}
    now = time.time()
    oc = RedisOnlineCounts(redis_client)
    await oc.report(uid("edge"), rooms, ttl=30, now=now)
    assert await oc.totals(list(rooms), now=now) == rooms


# --------------------------------------------------------------------------
# Redis loses its data: the heartbeats rebuild the registries
# --------------------------------------------------------------------------
class Edge:
    """What one edge's heartbeat does to the registries (part 2 of issue 4
    runs this on a timer): re-register the node, re-assert its connections,
    re-report its rooms' counts."""

    def __init__(self, client: RedisClient, node: NodeInfo, conns: list[tuple[str, int]],
                 counts: dict[str, int]) -> None:
        self.node, self.conns, self.counts = node, conns, counts
        self.nodes = RedisNodeRegistry(client)
        # Long TTLs: nothing may expire during the test, however loaded
        # the machine (expiry has tests of its own).
        self.registry = RedisConnectionRegistry(client, ttl=60)
        self.online = RedisOnlineCounts(client)

    async def heartbeat(self) -> None:
        now = time.time()
        await self.nodes.heartbeat(self.node, ttl=60, now=now)
        await self.registry.refresh(self.node.node_id, self.conns)
        await self.online.report(self.node.node_id, self.counts, ttl=60, now=now)


async def _lose_and_rebuild(client: RedisClient, restart: Callable[[], Any], *,
                            everything: bool) -> None:
    room = uid("room")
    edges = [Edge(client, NodeInfo(uid("edge"), f"g{i}", f"ws://e{i}/ws"),
                  [(uid("user"), j) for j in range(30)], {room: 10 + i})
             for i in range(3)]
    for e in edges:
        await e.heartbeat()
    reader = edges[0]

    async def missing() -> list[str]:
        """What the registries lack (empty: complete)."""
        out: list[str] = []
        live = {n.node_id for n in await reader.nodes.live(time.time())}
        if live != {e.node.node_id for e in edges}:
            out.append(f"live nodes {sorted(live)}")
        for e in edges:
            for user, _ in e.conns:
                if (got := await reader.registry.nodes(user)) != {e.node.node_id}:
                    out.append(f"{user} on {got}")
        total = (await reader.online.totals([room], time.time()))[room]
        if total != 33:
            out.append(f"online count {total}")
        return out

    assert await missing() == []
    await asyncio.to_thread(restart)
    users = [user for e in edges for user, _ in e.conns]
    lost = [u for u in users if not await when_up(lambda u=u: reader.registry.nodes(u))]
    if everything:
        # Redis came back empty: nothing is registered.
        assert await reader.nodes.live(time.time()) == [] and lost == users
    else:
        # One master came back empty: the users whose keys it held are gone.
        assert 0 < len(lost) < len(users)
    # One heartbeat round (the edges' next period) rebuilds everything.
    for e in edges:
        await when_up(e.heartbeat)
    assert await missing() == []


async def test_a_heartbeat_rebuilds_the_registries_after_redis_restarts_empty() -> None:
    with RedisServer() as srv:
        client = open_redis(srv.url)
        try:
            await _lose_and_rebuild(client, srv.restart, everything=True)
        finally:
            await client.aclose()


async def test_a_heartbeat_rebuilds_the_registries_after_a_cluster_master_restarts() -> None:
    with RedisClusterServers() as cluster:
        client = open_redis(cluster.url)
        try:
            await _lose_and_rebuild(client, lambda: cluster.restart(0), everything=False)
        finally:
            await client.aclose()


# --------------------------------------------------------------------------
# Property: any sequence of adds and removes answers like the memory registry
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registries(redis_server: RedisServer, redis_cluster: RedisClusterServers,
               ) -> Iterator[tuple[asyncio.Runner, dict[str, RedisConnectionRegistry]]]:
    """One event loop for the module's property (hypothesis drives a
    synchronous function; each example runs its coroutine on this loop)."""
    with asyncio.Runner() as runner:
        by_kind = {"standalone": RedisConnectionRegistry(open_redis(redis_server.url)),
                   "cluster": RedisConnectionRegistry(open_redis(redis_cluster.url))}
        yield runner, by_kind

        async def close() -> None:
            for reg in by_kind.values():
                await reg.client.aclose()
        runner.run(close())


registry_ops = st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 2),
                                  st.sampled_from(["n1", "n2", "n@3"]), st.integers(1, 3)),
                        max_size=20)


@pytest.mark.parametrize("kind", ["standalone", "cluster"])
def test_any_adds_and_removes_answer_like_the_memory_registry(registries, kind) -> None:
    runner, by_kind = registries
    reg = by_kind[kind]

    async def prop(ops: list[tuple[str, int, str, int]]) -> None:
        users = [uid("user") for _ in range(3)]
        memory = MemoryConnectionRegistry()
        for op, u, node, cid in ops:
            await getattr(reg, op)(users[u], node, cid)
            await getattr(memory, op)(users[u], node, cid)
        for user in users:
            assert await reg.nodes(user) == await memory.nodes(user)

    @PROPERTY
    @given(registry_ops)
    def check(ops: list[tuple[str, int, str, int]]) -> None:
        runner.run(prop(ops))

    check()
