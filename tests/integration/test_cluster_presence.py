"""Presence cluster-wide: three edge roles (real aiohttp servers on ephemeral
ports) on a real 3-node NATS cluster and a real Redis (the presence store).
A room spread over the three edges: after joins and leaves, every member on
every edge, and the HTTP endpoint of every edge, see the same list; a user
connected to two edges counts once and leaving one of them is no leave."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.client import LiveroomClient
from liveroom.distributed import RoleProcess
from liveroom.options import RoleOptions
from liveroom.services import Services
from room_router.bus_nats import NatsBus
from room_router.presence_redis import RedisPresenceStore
from storage.redis_conn import open_redis
from tests.integration.test_cluster_edges import CONFIG, HEARTBEAT, Shared
from tests.natsserver import NatsCluster
from tests.redisserver import RedisServer
from tests.support import API_KEY, JWT_SECRET, token, until
from tests.support_presence import Roster, roster

ROOM = "show.pres:1"


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


@pytest.fixture
async def edges(nats_cluster: NatsCluster, redis_server: RedisServer,
                tmp_path: Path) -> AsyncIterator[list[RoleProcess]]:
    shared = Shared(tmp_path)
    await shared.inbox.open()
    redis = open_redis(str(redis_server.url))
    config = tmp_path / "rooms.toml"
    config.write_text('[rooms."show.pres:*"]\npresence = true\n')
    procs: list[RoleProcess] = []
    prefix = f"tp{id(shared)}"
    try:
        for i in range(3):
            bus = await NatsBus.connect([nats_cluster.urls[i]], prefix=prefix)
            services = Services(bus, shared.store, shared.registry, shared.inbox,
                                shared.nodes, shared.online, [bus.close],
                                presence=RedisPresenceStore(redis))
            opts = RoleOptions(role="edge", port=0, node_id=f"pe-{i}-{prefix}", group=f"g{i}",
                               heartbeat=HEARTBEAT, jwt_secret=JWT_SECRET, api_key=API_KEY,
                               config=CONFIG, big_threshold=1000, data_dir=tmp_path,
                               rooms_config=config)
            proc = await RoleProcess(opts, services).start()
            assert proc.node is not None
            proc.node.presence.resync = 1.0  # heal lost deltas quickly here
            procs.append(proc)
        await until(lambda: all(len(p.view.placement.groups) == 3  # type: ignore[union-attr]
                                for p in procs), 5, "every edge sees 3 groups")
        await shared.store.apply(ROOM, "placement", {"spread": True})
        yield procs
    finally:
        for proc in reversed(procs):
            await proc.stop()
        await shared.inbox.close()
        await redis.aclose()


async def _join(proc: RoleProcess, user: str) -> Roster:
    c = await LiveroomClient.connect(proc.public_url, token(user, name=user.title()))
    return await roster(c, ROOM)


def _everyone_sees(rosters: list[Roster], want: set[str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return all([await r.ids() == want for r in rosters])
    return check


async def _http_members(procs: list[RoleProcess]) -> list[set[str]]:
    out = []
    async with aiohttp.ClientSession() as http:
        for p in procs:
            async with http.get(f"{p.url}/v1/rooms/{ROOM}/presence",
                                headers={"Authorization": f"Bearer {API_KEY}"}) as r:
                body: dict[str, Any] = await r.json()
                out.append({m["id"] for m in body["members"]})
    return out


async def test_presence_of_a_room_over_three_edges_is_the_same_everywhere(
        edges: list[RoleProcess]) -> None:
    ana = await _join(edges[0], "ana")
    bob = await _join(edges[1], "bob")
    cat = await _join(edges[2], "cat")
    dan0 = await _join(edges[0], "dan")
    dan2 = await _join(edges[2], "dan")
    rosters = [ana, bob, cat, dan0, dan2]
    try:
        everyone = {"ana", "bob", "cat", "dan"}
        await until(_everyone_sees(rosters, everyone), 10, "every member sees all four")

        async def http_same(want: set[str]) -> bool:
            return await _http_members(edges) == [want] * 3

        await until(lambda: http_same(everyone), 10, "every edge's endpoint agrees")
        await bob.client.close()
        await dan0.client.close()  # dan is still on edge 2
        left = {"ana", "cat", "dan"}
        await until(_everyone_sees([ana, cat, dan2], left), 10, "bob's leave everywhere")
        await until(lambda: http_same(left), 10, "the endpoints agree after the leaves")
        for r in (ana, cat, dan2):
            assert not any("dan" in f["leaves"] for f in r.frames), r.frames
            assert r.members is not None and r.members["ana"]["name"] == "Ana"
    finally:
        for r in rosters:
            if not r.client.ws.closed:
                await r.client.close()
