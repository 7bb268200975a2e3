"""The Python SDK (clients/python) in the distributed deployment: a router
and two ``liveroom edge`` processes on a real NATS cluster, Redis and
PostgreSQL. The edge that owns the room is SIGKILLed while SDK clients are
in it and its state keeps changing, then started again (the room moves back
to its group: the clients follow the ``moved`` redirect). Every client ends
with the final versions and every peer message exactly once."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clients.python import Backoff, Client, Room
from tests.cluster_support import SdkCluster, sdk_cluster
from tests.natsserver import NatsCluster
from tests.pgserver import PgServer
from tests.support import token, until

pytestmark = pytest.mark.e2e


async def test_edge_sigkilled_and_restarted_sdk_clients_converge_peers_exactly_once(
        nats_cluster: NatsCluster, pg: PgServer, tmp_path: Path,
        http: aiohttp.ClientSession) -> None:
    clients: list[Client] = []
    async with sdk_cluster(nats_cluster, pg, tmp_path, http, "sdk") as cluster:
        try:
            await _scenario(cluster, clients)
        finally:
            for c in clients:
                await c.close()


async def _scenario(cluster: SdkCluster, clients: list[Client]) -> None:
    room, edges, write = cluster.room, cluster.edges, cluster.write
    await write("meta", {"n": -1})
    viewers: list[tuple[Client, Room, list[dict[str, Any]], list[Any]]] = []
    for i, codec in enumerate(("msgpack", "json", "msgpack")):
        user = f"cv{i}"
        c = await Client.connect(cluster.through_router(user), lambda u=user: token(u),
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
        h = await cluster.head()
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
