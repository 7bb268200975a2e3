"""The Python SDK (clients/python) in the distributed deployment: a router
and two ``liveroom edge`` processes on a real NATS cluster, Redis and
PostgreSQL. The edge that owns the room is SIGKILLed while SDK clients are
in it and its state keeps changing, then started again (the room moves back
to its group: the clients follow the ``moved`` redirect). Every client ends
with the final versions and every peer message exactly once."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clients.python import Backoff, Client, Room
from room_router.placement import owner
from tests.cluster_support import RoleServer, route
from tests.natsserver import NatsCluster
from tests.pgserver import PgServer
from tests.redisserver import RedisServer
from tests.support import API_KEY, token, until

pytestmark = pytest.mark.e2e

ROLE_ARGS = ("--heartbeat", "0.5", "--big-threshold", "1000")
EDGE_ARGS = ("--action-rate", "500", "--action-burst", "500", "--peer-rate", "200",
             "--peer-burst", "200", "--online-interval", "0.2")


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_edge_sigkilled_and_restarted_sdk_clients_converge_peers_exactly_once(
        nats_cluster: NatsCluster, pg: PgServer, tmp_path: Path,
        http: aiohttp.ClientSession) -> None:
    redis = RedisServer().start()
    dsn = await pg.create_database("sdk")
    services = ["--nats", ",".join(nats_cluster.urls), "--redis", redis.url,
                "--postgres", dsn, "--subject-prefix", f"sdk{time.monotonic_ns()}"]
    router = RoleServer("router", tmp_path / "router", "--node-id", "router-0", *ROLE_ARGS,
                        *services)
    edges = [RoleServer("edge", tmp_path / f"edge-{i}", "--node-id", f"edge-{i}",
                        "--group", f"g{i}", *ROLE_ARGS, *EDGE_ARGS, *services)
             for i in range(2)]
    clients: list[Client] = []
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in [router, *edges]))
        await until(lambda: _groups(http, router.url, 2), 10, "the router sees 2 groups")
        room = next(r for r in (f"sdk-{i}" for i in range(100))
                    if owner(r, ["g0", "g1"]) == "g1")

        def through_router(user: str) -> Any:
            async def url() -> str:
                return str((await route(http, router.url, room, user))["url"])
            return url

        async def write(section: str, value: Any) -> None:
            async with http.post(f"{edges[0].url}/v1/rooms/{room}/state/{section}",
                                 json={"value": value},
                                 headers={"Authorization": f"Bearer {API_KEY}"}) as r:
                assert r.status == 200, await r.text()

        await write("meta", {"n": -1})
        viewers: list[tuple[Client, Room, list[dict[str, Any]], list[Any]]] = []
        for i, codec in enumerate(("msgpack", "json", "msgpack")):
            user = f"cv{i}"
            c = await Client.connect(through_router(user), lambda u=user: token(u),
                                     codec=codec, backoff=Backoff(0.1, 1.0), heartbeat=0.3)
            clients.append(c)
            peers: list[dict[str, Any]] = []
            resumes: list[Any] = []
            c.on("peer", peers.append)
            r = await c.join(room)
            r.on("resumed", lambda ok, why, rs=resumes: rs.append((ok, why)))
            viewers.append((c, r, peers, resumes))
        assert all(c.welcome and c.welcome["node"] == "edge-1" for c, *_ in viewers)
        sender = await Client.connect(edges[0].public_url, lambda: token("sender"),
                                      backoff=Backoff(0.1, 1.0), heartbeat=0.3)
        clients.append(sender)
        stop = asyncio.Event()

        async def keep_writing() -> None:
            for n in itertools.count():
                if stop.is_set():
                    return
                await write("score" if n % 2 else "meta", {"n": n})
                await asyncio.sleep(0.03)

        async def send_peers(first: int, last: int) -> None:
            for k in range(first, last):
                for i in range(len(viewers)):
                    await sender.send_peer(f"cv{i}", {"k": k}, f"m{k}", timeout=30)

        writing = asyncio.create_task(keep_writing())
        await send_peers(0, 5)
        edges[1].kill()
        await send_peers(5, 10)
        await until(lambda: all(c.connected and c.welcome and c.welcome["node"] == "edge-0"
                                for c, *_ in viewers), 20, "every client moved to edge 0")
        await send_peers(10, 15)
        edges[1].start()  # its group comes back: the room moves back to it
        await until(lambda: all(c.connected and c.welcome and c.welcome["node"] == "edge-1"
                                for c, *_ in viewers), 20, "every client back on edge 1")
        await send_peers(15, 20)
        stop.set()
        await writing
        await write("meta", {"final": True})

        async def converged() -> bool:
            async with http.get(f"{edges[0].url}/v1/rooms/{room}/state") as r:
                h = await r.json()
            return all(rm.versions == h["versions"] and rm.epoch == h["epoch"]
                       for _, rm, _, _ in viewers)

        await until(converged, 15, "every client holds the final versions")
        await until(lambda: all(len(p) >= 20 for _, _, p, _ in viewers), 15, "every peer")
        await asyncio.sleep(0.3)  # room for a duplicate to show up
        for c, rm, peers, resumes in viewers:
            assert rm.values["meta"] == {"final": True}
            assert [p["body"]["k"] for p in peers] == list(range(20)), peers
            # Redis kept the state: every rejoin patched it.
            assert resumes and all(ok for ok, _ in resumes), resumes
            assert c.connects >= 3
    finally:
        for c in clients:
            await c.close()
        for proc in [*edges, router]:
            proc.stop()
        redis.close()


async def _groups(http: aiohttp.ClientSession, base: str, n: int) -> bool:
    async with http.get(f"{base}/v1/cluster") as r:
        return len((await r.json())["groups"]) == n
