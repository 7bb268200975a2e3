"""``liveroom.services.open_distributed_stores`` on a real Redis (standalone
and Cluster) and a real PostgreSQL, wired into a real ``EdgeNode``: state
through the two tiers, the peer inbox, and one heartbeat that registers the
node, its connections and its rooms' counts, and rebuilds them after Redis
restarted empty (with the room's state reloaded from PostgreSQL under a new
epoch)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from edge.auth import mint_token, role_everywhere
from edge.config import EdgeConfig
from edge.fanout import Conn
from edge.metrics import Metrics
from edge.node import EdgeNode
from edge.session import Session
from liveroom.services import DistributedStores, open_distributed_stores
from room_router.bus import MemoryBus
from room_router.nodes import NodeInfo
from tests.integration.test_redis_ratelimit import Capture
from tests.pgserver import PgServer
from tests.redisserver import RedisServer, when_up

SECRET = "k" * 32


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def edge_on(stores: DistributedStores, node_id: str) -> EdgeNode:
    node = EdgeNode(node_id=node_id, config=EdgeConfig(coalesce_window=0), jwt_secret=SECRET,
                    store=stores.state, bus=MemoryBus(), registry=stores.registry,
                    inbox=stores.inbox, metrics=Metrics(),
                    shared_action_limiter=stores.action_limiter)
    node.start()
    return node


async def connect(node: EdgeNode, user: str, role: str, *frames: dict[str, Any],
                  ) -> tuple[Conn, Session, Capture]:
    sink = Capture()
    conn, session = node.open(sink)
    role, rooms = role_everywhere(role)
    token = mint_token(SECRET, user, user, role, time.time(), rooms=rooms)
    for frame in [{"type": "hello", "v": 1, "token": token}, *frames]:
        await node.receive(conn, session, json.dumps(frame), "json")
    return conn, session, sink


async def heartbeat(stores: DistributedStores, node: EdgeNode, info: NodeInfo) -> None:
    """What liveroom.heartbeat.Heartbeat does to the data layer each period."""
    now = time.time()
    await stores.nodes.heartbeat(info, 10, now)
    await stores.registry.refresh(info.node_id, node.local_connections())
    await stores.online.report(info.node_id, node.local_counts(), 10, now)


async def test_the_stores_behind_an_edge_node(pg: PgServer, redis_url: str) -> None:
    stores = await open_distributed_stores(redis_url, await pg.create_database("svc"))
    node = edge_on(stores, uid("edge"))
    info = NodeInfo(node.node_id, "g1", "ws://127.0.0.1:1/ws")
    try:
        room, host, viewer = uid("room"), uid("host"), uid("viewer")
        _, _, host_sink = await connect(
            node, host, "host", {"type": "join", "room": room},
            {"type": "state", "room": room, "section": "meta", "value": {"title": "t"}})
        await connect(node, viewer, "viewer", {"type": "join", "room": room},
                      {"type": "peer", "to": host, "id": "m1", "body": {"text": "hello"}})
        assert b'"type":"peer_ack"' not in host_sink.data  # the ack went to the sender
        assert b'"hello"' in host_sink.data  # the peer message reached the host
        assert await stores.state.versions(room) == (1, {"meta": 1})
        assert [m.id for m in await stores.inbox.pending(host, 0, 10)] == ["m1"]

        await heartbeat(stores, node, info)
        assert await stores.registry.nodes(host) == {node.node_id}
        assert [n.node_id for n in await stores.nodes.live(time.time())] == [node.node_id]
        assert await stores.online.totals([room], time.time()) == {room: 2}
        assert await stores.state.write_behind.flush(10)
        assert [c.total for c in await stores.state.durable.history(room)] == [1]
    finally:
        node.stop()
        await stores.close()


async def test_one_heartbeat_rebuilds_everything_after_redis_restarts_empty(
        pg: PgServer) -> None:
    with RedisServer() as srv:
        stores = await open_distributed_stores(srv.url, await pg.create_database("svc"))
        node = edge_on(stores, uid("edge"))
        info = NodeInfo(node.node_id, "g1", "ws://127.0.0.1:1/ws")
        try:
            room = uid("room")
            users = [uid("u") for _ in range(5)]
            await connect(node, users[0], "host", {"type": "join", "room": room},
                          {"type": "state", "room": room, "section": "meta", "value": 1},
                          {"type": "state", "room": room, "section": "meta", "value": 2})
            for u in users[1:]:
                await connect(node, u, "viewer", {"type": "join", "room": room})
            await heartbeat(stores, node, info)
            epoch = stores.state.epoch
            assert await stores.state.write_behind.flush(10)

            await asyncio.to_thread(srv.restart)
            assert await when_up(lambda: stores.registry.nodes(users[0])) == set()
            await when_up(lambda: heartbeat(stores, node, info))
            for u in users:
                assert await stores.registry.nodes(u) == {node.node_id}
            assert [n.node_id for n in await stores.nodes.live(time.time())] == [node.node_id]
            assert await stores.online.totals([room], time.time()) == {room: 5}
            # The state comes back from PostgreSQL, under a new epoch.
            snap = await stores.state.snapshot(room)
            assert (snap.total, snap.sections["meta"].value) == (2, 2)
            assert stores.state.epoch != epoch
        finally:
            node.stop()
            await stores.close()
