"""The distributed deployment as separate processes: a router and three
``liveroom edge`` processes against a real 3-node NATS cluster, a real Redis
and a real PostgreSQL (all on ephemeral loopback ports), and the faults:
a NATS node killed, Redis restarted empty, an edge killed."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import pytest

from edge.client import LiveroomClient
from room_router.nodes_redis import RedisNodeRegistry
from room_router.placement import owner, rank
from storage.redis_conn import open_redis
from tests.cluster_support import EDGE_ARGS, ROLE_ARGS, ResumingClient, RoleServer, route
from tests.natsserver import NatsCluster
from tests.pgserver import PgServer
from tests.redisserver import RedisClusterServers, RedisServer
from tests.support import API_KEY, JWT_SECRET, REPO, free_port, token, until

pytestmark = pytest.mark.e2e

HEARTBEAT = 0.5  # ROLE_ARGS's


@dataclass
class Cluster:
    nats: NatsCluster
    redis: RedisServer
    postgres: str
    tmp: Path
    prefix: str
    router: RoleServer | None = None
    edges: list[RoleServer] = field(default_factory=list)
    redis_url: str | None = None  # instead of ``redis`` (a Redis Cluster)

    def _services(self, nats: list[str] | None = None) -> list[str]:
        return ["--nats", ",".join(nats or self.nats.urls),
                "--redis", self.redis_url or self.redis.url,
                "--postgres", self.postgres, "--subject-prefix", self.prefix]

    def router_server(self) -> RoleServer:
        self.router = RoleServer("router", self.tmp / "router", "--node-id", "router-0",
                                 *ROLE_ARGS, *self._services())
        return self.router

    def edge_server(self, i: int, nats: list[str] | None = None) -> RoleServer:
        edge = RoleServer("edge", self.tmp / f"edge-{i}", "--node-id", f"edge-{i}",
                          "--group", f"g{i}", *ROLE_ARGS, *EDGE_ARGS, *self._services(nats))
        self.edges.append(edge)
        return edge

    def stop(self) -> None:
        for proc in [*self.edges, *([self.router] if self.router else [])]:
            proc.stop()

    @property
    def base(self) -> str:
        assert self.router is not None
        return self.router.url


@pytest.fixture
async def cluster(nats_cluster: NatsCluster, pg: PgServer, tmp_path: Path
                  ) -> AsyncIterator[Cluster]:
    redis = RedisServer().start()
    dsn = await pg.create_database("cl")
    c = Cluster(nats_cluster, redis, dsn, tmp_path, f"t{time.monotonic_ns()}")
    try:
        yield c
    finally:
        c.stop()
        redis.close()


async def live_groups(http: aiohttp.ClientSession, base: str) -> list[str]:
    async with http.get(f"{base}/v1/cluster") as r:
        return sorted((await r.json())["groups"])


async def three(cluster: Cluster, http: aiohttp.ClientSession,
                nats: dict[int, list[str]] | None = None) -> list[RoleServer]:
    router = cluster.router_server()
    edges = [cluster.edge_server(i, (nats or {}).get(i)) for i in range(3)]
    # Started side by side: each process spends most of its start importing.
    await asyncio.gather(*(asyncio.to_thread(p.start) for p in [router, *edges]))
    for srv in [router, *edges]:
        assert srv is not None
        await until(lambda s=srv: _has3(http, s.url), 10, f"{srv.role} sees 3 groups")
    return edges


async def _has3(http: aiohttp.ClientSession, url: str) -> bool:
    return len(await live_groups(http, url)) == 3


async def set_section(http: aiohttp.ClientSession, edge: RoleServer, room: str,
                      section: str, value: Any) -> dict[str, Any]:
    async with http.post(f"{edge.url}/v1/rooms/{room}/state/{section}", json={"value": value},
                         headers={"Authorization": f"Bearer {API_KEY}"}) as r:
        body: dict[str, Any] = await r.json()
        assert r.status == 200, body
        return body


async def connect(http: aiohttp.ClientSession, url: str, user: str,
                  **kw: Any) -> LiveroomClient:
    return await LiveroomClient.connect(url, token(user), session=http, **kw)


async def warm_up(room: str, publishers: list[LiveroomClient],
                  viewers: list[LiveroomClient], timeout: float = 10) -> None:
    """Until every viewer hears every publisher: a room's NATS interest
    crosses the cluster routes asynchronously after the joins."""
    heard = [set[str]() for _ in viewers]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not all(len(h) == len(publishers) for h in heard):
        assert loop.time() < deadline, f"warm-up: {heard}"
        for p in publishers:
            await p.action(room, "comment", {"text": "warm"})
        for i, v in enumerate(viewers):
            try:
                while True:
                    f = await v.recv(0.05)
                    if f.get("type") == "action":
                        heard[i].add(f["from"]["id"])
            except TimeoutError:
                pass
    # Drain the warm-ups still in flight: a marker per publisher, in order.
    for p in publishers:
        await p.action(room, "comment", {"text": "warm-end"})
    for v in viewers:
        ends = 0
        while ends < len(publishers):
            f = await v.recv(5)
            if f.get("type") == "action" and f["body"]["text"] == "warm-end":
                ends += 1


async def test_big_room_over_three_edge_processes_exactly_once_in_order(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    edges = await three(cluster, http)
    room = "concert:main"
    await set_section(http, edges[0], room, "placement", {"spread": True})
    # Clients find their edge through the router: a big room spreads them.
    viewers: list[LiveroomClient] = []
    urls: set[str] = set()
    for i in range(9):
        answer = await route(http, cluster.base, room, f"viewer-{i}")
        assert answer["spread"] is True and len(answer["urls"]) == 3
        urls.add(answer["url"])
        viewers.append(await connect(http, answer["url"], f"viewer-{i}"))
    assert urls == {e.public_url for e in edges}, "9 clients landed on every edge"
    publishers = [await connect(http, e.public_url, f"pub-{i}") for i, e in enumerate(edges)]
    try:
        for c in viewers + publishers:
            assert (await c.join(room))["type"] == "joined"
        await warm_up(room, publishers, viewers)
        n = 50
        for k in range(n):
            for p in publishers:
                await p.action(room, "comment", {"text": f"m-{k}"})
        for p in publishers:
            await p.action(room, "comment", {"text": "end"})

        async def collect(v: LiveroomClient) -> dict[str, list[int]]:
            got: dict[str, list[int]] = {}
            ends = 0
            while ends < len(publishers):
                f = await v.recv(10)
                if f.get("type") != "action":
                    continue
                text, sender = f["body"]["text"], f["from"]["id"]
                if text == "end":
                    ends += 1
                elif text.startswith("m-"):
                    got.setdefault(sender, []).append(int(text[2:]))
            return got

        results = await asyncio.wait_for(asyncio.gather(*(collect(v) for v in viewers)), 20)
        for got in results:
            assert sorted(got) == ["pub-0", "pub-1", "pub-2"]
            for sender, seqs in got.items():
                assert seqs == list(range(n)), (sender, seqs[:10])
        # The online count is the sum over the edges: one more member on
        # edge 0 makes every viewer, on every edge, see 13.
        late = await connect(http, edges[0].public_url, "late")
        publishers.append(late)
        assert (await late.join(room))["type"] == "joined"
        for v in viewers:
            await v.expect("online", timeout=5, room=room, count=13)
    finally:
        for c in viewers + publishers:
            await c.close()


async def test_small_rooms_on_one_group_wrong_edge_gets_redirect(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    edges = await three(cluster, http)
    by_url = {e.public_url: e for e in edges}
    for k in range(6):
        room = f"chat.{k}"
        answer = await route(http, cluster.base, room)
        assert answer["spread"] is False
        assert answer["group"] == owner(room, ["g0", "g1", "g2"])
        for e in edges:  # every edge answers the route the same way
            assert (await route(http, e.url, room))["url"] == answer["url"]
            c = await connect(http, e.public_url, f"s{k}-{e.info['node']}")
            try:
                got = await c.join(room)
                if e is by_url[answer["url"]]:
                    assert got["type"] == "joined"
                else:
                    assert got["type"] == "redirect" and got["reason"] == "not_owner"
                    assert got["url"] == answer["url"]
            finally:
                await c.close()


async def test_peer_from_edge_a_to_edge_c_and_offline_inbox_once_after_reconnect(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    a, b, c = await three(cluster, http)
    alice = await connect(http, a.public_url, "alice")
    carol = await connect(http, c.public_url, "carol")
    try:
        await alice.peer("carol", {"text": "across"}, "p1")
        got = await carol.expect("peer", timeout=5)
        assert got["body"] == {"text": "across"} and got["from"]["id"] == "alice"
        ack = await alice.peer("dave", {"text": "while you were away"}, "p2")
        assert ack["type"] == "peer_ack"
    finally:
        await carol.close()
    dave = await connect(http, b.public_url, "dave", inbox_cursor=0)
    try:
        got = await dave.expect("peer", timeout=5)
        assert got["seq"] == ack["seq"]
        report = await dave.expect("inbox", timeout=5)
        assert report["recovered"] is True and report["upto"] == ack["seq"]
        await dave.send({"type": "peer_ack", "upto": ack["seq"]})
        await dave.request({"type": "ping"}, "pong")
    finally:
        await dave.close()
    dave = await connect(http, c.public_url, "dave", inbox_cursor=ack["seq"])
    try:
        await dave.expect("inbox", timeout=5)
        with pytest.raises(TimeoutError):
            await dave.expect("peer", timeout=0.5)
    finally:
        await dave.close()
        await alice.close()


async def test_fault_kill_one_nats_node_delivery_resumes_within_2s(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    # Edge 2 is given only NATS node 2 (it learns the others from the
    # cluster); killing node 2 makes it fail over.
    edges = await three(cluster, http, nats={2: [cluster.nats.urls[2]]})
    room = "fault:nats"
    await set_section(http, edges[0], room, "placement", {"spread": True})
    viewers = [await connect(http, e.public_url, f"nv{i}") for i, e in enumerate(edges)]
    sender = await connect(http, edges[0].public_url, "nsender")
    try:
        for v in [*viewers, sender]:
            assert (await v.join(room))["type"] == "joined"
        await warm_up(room, [sender], viewers)
        cluster.nats.kill(2)
        try:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            heard = [False] * len(viewers)
            k = 0
            while not all(heard):
                assert loop.time() - t0 < 2.0, f"delivery did not resume within 2 s: {heard}"
                k += 1
                await sender.action(room, "comment", {"text": f"after-{k}"})
                for i, v in enumerate(viewers):
                    try:
                        while not heard[i]:
                            f = await v.recv(0.02)
                            heard[i] = f.get("type") == "action" and \
                                f["body"]["text"].startswith("after-")
                    except TimeoutError:
                        pass
        finally:
            cluster.nats.restart(2)
    finally:
        for v in [*viewers, sender]:
            await v.close()


async def test_fault_restart_redis_registries_rebuilt_within_one_heartbeat(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    edges = await three(cluster, http)
    bob = await connect(http, edges[1].public_url, "bob")
    alice = await connect(http, edges[0].public_url, "alice-r")
    client = open_redis(cluster.redis.url)
    try:
        nodes = RedisNodeRegistry(client)
        assert len(await nodes.live(time.time())) == 4  # 3 edges + the router
        cluster.redis.restart(kill=True)  # empty: nothing was saved
        t0 = time.monotonic()
        ids = await until(lambda: _live_ids(nodes), HEARTBEAT + 1.0, "registry rebuilt",
                          interval=0.02)
        took = time.monotonic() - t0
        print(f"registry rebuilt {took:.3f}s after the Redis restart (heartbeat {HEARTBEAT}s)")
        assert ids == ["edge-0", "edge-1", "edge-2", "router-0"]
        # Within one heartbeat period (plus 0.2 s for the test's own polling
        # and the processes' scheduling on a busy machine).
        assert took <= HEARTBEAT + 0.2, took
        # The connection registry came back too: a peer message reaches bob.
        await until(lambda: client.exists("lr:c:{u:bob}"), HEARTBEAT * 2 + 1, "bob registered")
        await alice.peer("bob", {"text": "after the restart"}, "r1")
        got = await bob.expect("peer", timeout=5)
        assert got["body"] == {"text": "after the restart"}
    finally:
        await client.aclose()
        await bob.close()
        await alice.close()


async def _live_ids(nodes: RedisNodeRegistry) -> list[str] | None:
    try:
        ids = sorted(n.node_id for n in await nodes.live(time.time()))
    except Exception:
        return None
    return ids if len(ids) == 4 else None


async def test_fault_kill_an_edge_clients_reconnect_resync_and_lose_no_peer_message(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    edges = await three(cluster, http)
    # A small room on edge 1's group, and a user in it.
    room = next(r for r in (f"kill-{i}" for i in range(100))
                if owner(r, ["g0", "g1", "g2"]) == "g1")
    await set_section(http, edges[1], room, "meta", {"title": "before"})
    user = ResumingClient(http, cluster.base, "kim", room)
    joined = await user.connect()
    assert joined["type"] == "joined" and user.url == edges[1].public_url
    assert user.state == {"meta": {"title": "before"}}
    sender = await connect(http, edges[0].public_url, "sam")
    try:
        ack1 = await sender.peer("kim", {"n": 1}, "k1")
        await user.pump(1.0)
        assert [p["body"] for p in user.peers] == [{"n": 1}]
        edges[1].kill()
        await user.pump(2.0)
        assert user.closed, "the socket of the killed edge dropped"
        # While kim is away: state changes and peer messages.
        await set_section(http, edges[0], room, "pinned", {"text": "while away"})
        ack2 = await sender.peer("kim", {"n": 2}, "k2")
        ack3 = await sender.peer("kim", {"n": 3}, "k3")
        assert ack1["seq"] < ack2["seq"] < ack3["seq"]
        # Through the router (which drops edge 1 after 3 missed heartbeats).
        joined = await user.connect()
        assert user.url in (edges[0].public_url, edges[2].public_url)
        assert joined["recovered"] is True
        assert [s["section"] for s in joined["sections"]] == ["pinned"]
        await user.pump(1.0)
        assert user.state == {"meta": {"title": "before"}, "pinned": {"text": "while away"}}
        assert [p["body"] for p in user.peers] == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert user.last_inbox["recovered"] is True and user.last_inbox["upto"] == ack3["seq"]
    finally:
        await sender.close()
        await user.close()


async def test_cdn_role_serves_the_shared_state(cluster: Cluster,
                                                http: aiohttp.ClientSession) -> None:
    edge = cluster.edge_server(0)
    cdn = RoleServer("cdn", cluster.tmp / "cdn", "--node-id", "cdn-0", *ROLE_ARGS,
                     *cluster._services())
    await asyncio.gather(asyncio.to_thread(edge.start), asyncio.to_thread(cdn.start))
    try:
        wrote = await set_section(http, edge, "polled:1", "meta", {"title": "from an edge"})
        async with http.get(f"{cdn.url}/v1/rooms/polled:1/state") as r:
            head = await r.json()
            assert r.status == 200 and head["total"] == wrote["total"], head
            assert head["versions"] == {"meta": 1}
    finally:
        cdn.stop()


def test_liveroom_cluster_runs_three_edges_and_a_router(cluster: Cluster,
                                                        tmp_path: Path) -> None:
    """``liveroom cluster --edges 3`` against the test's services: the router
    answers routes to three distinct edges, and SIGTERM stops everything."""
    port = free_port()
    env = {**os.environ, "LIVEROOM_JWT_SECRET": JWT_SECRET, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "liveroom.cli", "cluster", "--edges", "3", "--port", str(port),
         "--heartbeat", "0.5", "--data-dir", str(tmp_path / "cl"), *cluster._services()],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        for line in proc.stderr:
            lines.append(line)
            if "cluster ready" in line or time.monotonic() > deadline:
                break
        assert any("cluster ready" in ln for ln in lines), "".join(lines)
        listening = re.compile(r"listening on http://[\d.]+:\d+ \((\{.*\})\)")
        infos = [json.loads(m.group(1)) for ln in lines if (m := listening.search(ln))]
        edges = {i["public_url"] for i in infos if i["role"] == "edge"}
        assert len(edges) == 3, lines
        urls: set[str] = set()
        deadline = time.monotonic() + 10
        while len(urls) < 3:
            assert time.monotonic() < deadline, urls
            for k in range(30):
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{port}/v1/route?room=c-{k}", timeout=2) as r:
                        urls.add(json.load(r)["url"])
                except OSError:
                    pass
        assert urls == edges
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_roles_on_a_redis_cluster(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    """The same roles against a 3-master Redis Cluster (redis+cluster://):
    placement, state through the hash-tagged keys, peer across edges."""
    with RedisClusterServers() as rc:
        cluster.redis_url = rc.url
        edges = await three(cluster, http)
        room = "rc.room:1"
        answer = await route(http, cluster.base, room)
        owner_edge = next(e for e in edges if e.public_url == answer["url"])
        await set_section(http, edges[0], room, "meta", {"title": "on a cluster"})
        amy = await connect(http, owner_edge.public_url, "amy")
        ben = await connect(http, edges[(edges.index(owner_edge) + 1) % 3].public_url, "ben")
        try:
            joined = await amy.join(room)
            assert joined["type"] == "joined" and joined["versions"] == {"meta": 1}
            await amy.peer("ben", {"text": "via the cluster"}, "rc1")
            got = await ben.expect("peer", timeout=5)
            assert got["body"] == {"text": "via the cluster"}
        finally:
            await amy.close()
            await ben.close()
            cluster.stop()


async def test_stopping_an_edge_its_group_leaves_and_clients_resume_at_the_new_owner(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    edges = await three(cluster, http)
    room = next(r for r in (f"leave-{i}" for i in range(100))
                if owner(r, ["g0", "g1", "g2"]) == "g2")
    new_owner = owner(room, ["g0", "g1"])
    await set_section(http, edges[0], room, "meta", {"title": "t"})
    user = ResumingClient(http, cluster.base, "lee", room)
    await user.connect()
    assert user.url == edges[2].public_url
    assert user.client is not None
    edges[2].stop()  # SIGTERM: deregisters at once, closes clients with 4101
    await user.pump(3.0)
    assert user.closed and user.client.ws.close_code == 4101
    joined = await user.connect()
    assert user.url == edges[int(new_owner[1:])].public_url
    assert joined["recovered"] is True and joined["sections"] == []
    await user.close()


# --------------------------------------------------------------------------
# The agents role on the cluster's services: --redis (owner lookup, quotas),
# --nats (the words on the bus), --postgres (the interactions).
# --------------------------------------------------------------------------
AGENT_ARGS = ("--agent-backend", "scripted", "--agent-characters", "quinn",
              "--agent-cooldown", "0.1", "--agent-word-delay", "0.01")


def agents_server(cluster: Cluster, node: str, room: str, *extra: str) -> RoleServer:
    return RoleServer("agents", cluster.tmp / node, "--node-id", node, "--agent-room", room,
                      *AGENT_ARGS, *cluster._services(), *extra)


async def say_to_everyone(room: str, speaker: LiveroomClient, viewers: list[LiveroomClient],
                          timeout: float = 20) -> list[dict[str, Any]]:
    """Comment to Quinn until every viewer hears one same answer of hers (the
    bus interest of fresh joins spreads over the NATS routes
    asynchronously); that answer's ``agent.say`` frame, one per viewer, each
    heard exactly once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    async def says(v: LiveroomClient, until_t: float) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while (left := until_t - loop.time()) > 0:
            try:
                f = await v.recv(left)
            except TimeoutError:
                break
            if f.get("type") == "action" and f.get("kind") == "agent.say" \
                    and f.get("from", {}).get("id") == "quinn":
                got.append(f)
        return got

    k = 0
    while loop.time() < deadline:
        k += 1
        await speaker.action(room, "comment", {"text": f"quinn, question {k}?"})
        heard = await asyncio.gather(*(says(v, loop.time() + 2.0) for v in viewers))
        common = set.intersection(*({f["body"]["reply_id"] for f in h} for h in heard))
        if common:
            rid = sorted(common)[0]
            out = []
            for h in heard:
                mine = [f for f in h if f["body"]["reply_id"] == rid]
                assert len(mine) == 1, f"heard {len(mine)} times"
                out.append(mine[0])
            return out
    raise AssertionError(f"no answer of Quinn reached every viewer in {timeout} s")


async def test_agents_role_on_nats_redis_postgres_and_an_edge_killed(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    edges = await three(cluster, http)
    room = "agents.show:1"
    home = await route(http, cluster.base, room)
    agents = agents_server(cluster, "agents-a", room)
    await asyncio.to_thread(agents.start)
    viewers: list[Any] = []
    try:
        assert agents.info == {"node_id": "agents-a", "edge": "registry", "bus": True,
                               "quota": "redis", "interactions": "postgres",
                               "memory": "redis"}
        # Quinn joined at the owner edge the registry names (no --edge-url),
        # once the process has settled in the registry (two seat periods).
        await until(lambda: f"in {room} at {home['url']}" in agents.logs(), 10,
                    "Quinn seated at the owner edge")
        # Spread over every edge: a viewer on each; Quinn's words reach all
        # three through the bus, once each.
        await set_section(http, edges[0], room, "placement", {"spread": True})
        viewers = [await connect(http, e.public_url, f"fan-{i}") for i, e in enumerate(edges)]
        for v in viewers:
            assert (await v.join(room))["type"] == "joined"
        says = await say_to_everyone(room, viewers[1], viewers)
        assert {s["body"]["reply_id"] for s in says} == {says[0]["body"]["reply_id"]}
        assert all(s["from"]["role"] == "agent" for s in says)

        # The interaction API: stored in PostgreSQL under this node, charged
        # in Redis.
        headers = {"Authorization": f"Bearer {token('ivy')}"}
        async with http.post(f"{agents.url}/v1/rooms/{room}/agents/quinn/interactions",
                             json={"text": "hello there"}, headers=headers) as r:
            assert r.status == 202, await r.text()
            iid = (await r.json())["id"]
        async with http.get(f"{agents.url}/v1/interactions/{iid}/events", headers=headers,
                            timeout=aiohttp.ClientTimeout(total=15)) as r:
            assert "event: done" in await r.text()
        db = await asyncpg.connect(cluster.postgres)
        try:
            row = await db.fetchrow("SELECT node, status, user_id, completion_tokens"
                                    " FROM interactions WHERE id = $1", iid)
            events = await db.fetchval("SELECT count(*) FROM interaction_events"
                                       " WHERE interaction = $1", iid)
        finally:
            await db.close()
        assert (row["node"], row["status"], row["user_id"]) == ("agents-a", "done", "ivy")
        assert row["completion_tokens"] > 0 and events >= 2
        redis = open_redis(cluster.redis.url)
        try:
            keys = [k async for k in redis.scan_iter(match="quota:{user:ivy}:*")]
            assert len(keys) == 1 and int(await redis.get(keys[0])) > 0
        finally:
            await redis.aclose()

        # The edge Quinn sits on dies: the link finds the new owner in the
        # registry and joins there; Quinn answers again.
        home_edge = next(e for e in edges if e.public_url == home["url"])
        home_edge.kill()
        alive = [(e, v) for e, v in zip(edges, viewers, strict=True) if e is not home_edge]
        await until(lambda: agents.logs().count(f"in {room} at ") >= 2, 15,
                    "Quinn rejoined after her edge died")
        rejoined = re.findall(rf"in {re.escape(room)} at (\S+)", agents.logs())[-1]
        assert rejoined in {e.public_url for e, _ in alive}
        says = await say_to_everyone(room, alive[0][1], [v for _, v in alive])
        assert len(says) == 2
    finally:
        for v in viewers:
            await v.close()
        agents.stop()


async def test_agents_follow_a_redirect_and_share_interactions_through_postgres(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    edges = await three(cluster, http)
    # Owned by g1, and its seat (room, quinn) by process a (llm_agents/seats.py):
    # the seat has one owner, and b, with the same start-up seat, stays out.
    room = next(r for r in (f"small-{i}" for i in range(100))
                if owner(r, ["g0", "g1", "g2"]) == "g1"
                and rank(["agents-a", "agents-b"], f"{r}/quinn")[0] == "agents-a")
    # Sent to the wrong edge: the redirect takes Quinn to the owner.
    a = agents_server(cluster, "agents-a", room, "--edge-url", edges[0].public_url,
                      "--agent-word-delay", "0.05")
    b = agents_server(cluster, "agents-b", room, "--edge-url", edges[1].public_url)
    await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
    try:
        await until(lambda: f"in {room} at {edges[1].public_url}" in a.logs(), 10,
                    "Quinn seated by a at the owner edge")
        viewer = await connect(http, edges[1].public_url, "uma")
        joined = await viewer.join(room)
        assert joined["members"] == 2  # one Quinn (a's), and uma
        assert f"in {room} at" not in b.logs()
        await viewer.close()
        # Run by process a, read from process b while it runs (polled from
        # the store) and after: the same events.
        headers = {"Authorization": f"Bearer {token('ivy')}"}
        async with http.post(f"{a.url}/v1/rooms/{room}/agents/quinn/interactions",
                             json={"text": "tell me a story"}, headers=headers) as r:
            assert r.status == 202
            iid = (await r.json())["id"]
        timeout = aiohttp.ClientTimeout(total=20)
        async with http.get(f"{b.url}/v1/interactions/{iid}/events", headers=headers,
                            timeout=timeout) as r:
            assert r.status == 200
            from_b = await r.text()
        async with http.get(f"{a.url}/v1/interactions/{iid}/events", headers=headers,
                            timeout=timeout) as r:
            from_a = await r.text()
        assert from_b == from_a and from_a.count("event: done") == 1
        async with http.get(f"{b.url}/v1/interactions/{iid}", headers=headers) as r:
            assert (await r.json())["status"] == "done"
        # Another user sees nothing, on either process.
        other = {"Authorization": f"Bearer {token('eve')}"}
        async with http.get(f"{b.url}/v1/interactions/{iid}", headers=other) as r:
            assert r.status == 404
    finally:
        a.stop()
        b.stop()
