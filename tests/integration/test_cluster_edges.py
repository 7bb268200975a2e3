"""Three edge roles (real aiohttp servers on ephemeral ports, each with its
own NATS connection to a real 3-node NATS cluster) behind the placement:
big rooms spread over all edges, small rooms on one group with redirects,
peer messages across edges, rooms that move when a group joins, routes.

The edges share one state store, connection registry, inbox and node
registry of our own (in-memory/SQLite) here; the multi-process tests in
tests/e2e run the same roles against Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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
from room_router.inbox import SqliteInbox
from room_router.nodes import MemoryNodeRegistry, MemoryOnlineCounts
from room_router.ratelimit import Rate
from room_router.registry import MemoryConnectionRegistry
from state_versions.store import MemoryStateStore
from tests.natsserver import NatsCluster
from tests.support import JWT_SECRET, token, until

HEARTBEAT = 0.2
CONFIG = EdgeConfig(action_rate=Rate(500.0, 500), peer_rate=Rate(200.0, 200),
                    online_interval=0.1)


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


class Shared:
    """The cluster-wide services of our own (one copy for every edge)."""

    def __init__(self, tmp: Path) -> None:
        self.store = MemoryStateStore()
        self.registry = MemoryConnectionRegistry()
        self.inbox = SqliteInbox(tmp / "inbox.sqlite3")
        self.nodes = MemoryNodeRegistry()
        self.online = MemoryOnlineCounts()


Cluster = Callable[..., Awaitable[RoleProcess]]


@pytest.fixture
async def cluster(nats_cluster: NatsCluster, tmp_path: Path
                  ) -> AsyncIterator[tuple[Shared, Cluster]]:
    shared = Shared(tmp_path)
    await shared.inbox.open()
    procs: list[RoleProcess] = []
    prefix = f"t{id(shared)}"

    async def start(role: str = "edge", group: str = "g0", node_id: str | None = None,
                    nats_index: int | None = None, **extra: Any) -> RoleProcess:
        urls = nats_cluster.urls if nats_index is None else [nats_cluster.urls[nats_index]]
        bus = await NatsBus.connect(urls, prefix=prefix)
        services = Services(bus, shared.store, shared.registry, shared.inbox, shared.nodes,
                            shared.online, [bus.close])
        opts = RoleOptions(role=role, port=0, node_id=node_id or f"{role}-{len(procs)}",
                           group=group, heartbeat=HEARTBEAT, jwt_secret=JWT_SECRET,
                           config=CONFIG, big_threshold=1000,
                           **{"data_dir": tmp_path, **extra})
        proc = await RoleProcess(opts, services).start()
        procs.append(proc)
        return proc

    yield shared, start
    for proc in reversed(procs):
        await proc.stop()
    await shared.inbox.close()


async def client(proc: RoleProcess, user: str, role: str = "viewer",
                 **kw: Any) -> LiveroomClient:
    return await LiveroomClient.connect(proc.public_url, token(user, role), **kw)


async def three_edges(start: Cluster) -> list[RoleProcess]:
    edges = [await start("edge", f"g{i}", nats_index=i) for i in range(3)]
    await until(lambda: all(len(e.view.placement.groups) == 3 for e in edges  # type: ignore[union-attr]
                            ), 5, "every edge sees 3 groups")
    return edges


async def test_big_room_every_viewer_gets_every_action_once_in_publisher_order(
        cluster: tuple[Shared, Cluster]) -> None:
    shared, start = cluster
    edges = await three_edges(start)
    room = "show.big:1"
    await shared.store.apply(room, "placement", {"spread": True})
    viewers = [await client(e, f"v{i}-{j}") for i, e in enumerate(edges) for j in range(2)]
    publishers = [await client(e, f"p{i}") for i, e in enumerate(edges)]
    try:
        for c in viewers + publishers:
            assert (await c.join(room))["type"] == "joined"
        seen: dict[int, dict[str, list[int]]] = {i: {} for i in range(len(viewers))}
        online: dict[int, int] = {}

        async def drain(i: int, c: LiveroomClient, until_marks: int) -> None:
            marks: set[str] = set()
            while len(marks) < until_marks:
                f = await c.recv(10)
                if f.get("type") == "online":
                    online[i] = f["count"]
                if f.get("type") != "action":
                    continue
                text = f["body"]["text"]
                if text.startswith("warm"):
                    continue
                sender = f["from"]["id"]
                if text == "end":
                    marks.add(sender)
                    continue
                seen[i].setdefault(sender, []).append(int(text.split("-")[1]))

        # Warm up: interest for the room subject crosses the NATS routes
        # asynchronously; wait until every viewer hears every publisher.
        heard = [set[str]() for _ in viewers]

        async def warm() -> bool:
            for p in publishers:
                await p.action(room, "comment", {"text": "warm"})
            for i, v in enumerate(viewers):
                try:
                    while True:
                        f = await v.recv(0.05)
                        if f.get("type") == "online":
                            online[i] = f["count"]
                        if f.get("type") == "action":
                            heard[i].add(f["from"]["id"])
                except TimeoutError:
                    pass
            return all(len(h) == len(publishers) for h in heard)

        await until(warm, 10, "warm-up through the NATS cluster")
        n = 40
        for k in range(n):
            for p in publishers:
                await p.action(room, "comment", {"text": f"m-{k}"})
        for p in publishers:
            await p.action(room, "comment", {"text": "end"})
        try:
            await asyncio.wait_for(asyncio.gather(
                *(drain(i, v, len(publishers)) for i, v in enumerate(viewers))), 15)
        except TimeoutError:
            raise AssertionError({i: {k: len(v) for k, v in s.items()}
                                  for i, s in seen.items()}) from None
        for i in range(len(viewers)):
            assert set(seen[i]) == {"p0", "p1", "p2"}
            for sender, got in seen[i].items():
                assert got == list(range(n)), (i, sender, got[:10])
        # One bus subscription per edge, however many viewers it holds.
        for e in edges:
            assert e.node is not None and e.node.hub.count(room) == 3
        # The online count members see is the sum over the edges (9).
        await until(lambda: all(e.node is not None and e.node.online_elsewhere.get(room) == 6
                                for e in edges), 5, "online counts summed")
        for i, v in enumerate(viewers):
            if online.get(i) != 9:
                await v.expect("online", timeout=5, room=room, count=9)
    finally:
        for c in viewers + publishers:
            await c.close()


async def test_small_rooms_live_on_one_group_and_wrong_edge_joins_redirect(
        cluster: tuple[Shared, Cluster]) -> None:
    _, start = cluster
    edges = await three_edges(start)
    by_url = {e.public_url: e for e in edges}
    async with aiohttp.ClientSession() as http:
        for k in range(12):
            room = f"small.{k}:x"
            answers = []
            for e in edges:
                async with http.get(f"{e.url}/v1/route", params={"room": room}) as r:
                    assert r.status == 200
                    assert r.headers["Cache-Control"] == "no-store"
                    answers.append(await r.json())
            assert all(a == answers[0] for a in answers), answers
            owner = by_url[answers[0]["url"]]
            assert answers[0]["spread"] is False and answers[0]["group"] == owner.opts.group
            for e in edges:
                c = await client(e, f"u{k}")
                try:
                    got = await c.join(room)
                    if e is owner:
                        assert got["type"] == "joined", got
                    else:
                        assert got == {"type": "redirect", "room": room, "url": owner.public_url,
                                       "urls": [owner.public_url], "reason": "not_owner",
                                       "ref": got["ref"]}
                        # Not a member: the edge holds no subscription for it.
                        assert e.node is not None and room not in e.node.hub.rooms
                finally:
                    await c.close()


async def test_route_errors(cluster: tuple[Shared, Cluster]) -> None:
    _, start = cluster
    router = await start("router", node_id="router-0")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{router.url}/v1/route") as r:
            assert r.status == 400 and (await r.json())["code"] == "missing_field"
        async with http.get(f"{router.url}/v1/route", params={"room": "bad room!"}) as r:
            assert r.status == 400 and (await r.json())["code"] == "invalid_field"
        async with http.get(f"{router.url}/v1/route",
                            params={"room": "ok", "client": "x" * 65}) as r:
            assert r.status == 400 and (await r.json())["field"] == "client"
        async with http.get(f"{router.url}/v1/route", params={"room": "ok"}) as r:
            body = await r.json()
            assert r.status == 503 and body["code"] == "unavailable", body
        edge = await start("edge", "g0")
        await until(lambda: router.view is not None and router.view.placement.groups, 5,
                    "router sees the edge")
        async with http.get(f"{router.url}/v1/route", params={"room": "ok"}) as r:
            assert r.status == 200 and (await r.json())["url"] == edge.public_url


async def test_peer_across_edges_and_offline_inbox_delivered_once(
        cluster: tuple[Shared, Cluster]) -> None:
    _, start = cluster
    a_edge, b_edge, c_edge = await three_edges(start)
    alice = await client(a_edge, "alice")
    carol = await client(c_edge, "carol")
    try:
        ack = await alice.peer("carol", {"text": "hi carol"}, "m1")
        assert ack["type"] == "peer_ack"
        got = await carol.expect("peer", timeout=5)
        assert got["body"] == {"text": "hi carol"} and got["from"]["id"] == "alice"
        # Dave is offline: the message waits in the inbox.
        ack = await alice.peer("dave", {"text": "later"}, "m2")
        seq = ack["seq"]
    finally:
        await carol.close()
    dave = await client(b_edge, "dave", inbox_cursor=0)
    try:
        got = await dave.expect("peer", timeout=5)
        assert got["seq"] == seq and got["body"] == {"text": "later"}
        report = await dave.expect("inbox", timeout=5)
        assert report == {"type": "inbox", "recovered": True, "upto": seq, "cursor": 0}
        await dave.send({"type": "peer_ack", "upto": seq})
        await dave.request({"type": "ping"}, "pong")  # the ack is processed in order
    finally:
        await dave.close()
    # Reconnecting to another edge, reporting the cursor: nothing twice.
    dave = await client(c_edge, "dave", inbox_cursor=seq)
    try:
        report = await dave.expect("inbox", timeout=5)
        assert report["recovered"] is True and report["upto"] == seq
        with pytest.raises((TimeoutError, asyncio.TimeoutError)):
            await dave.expect("peer", timeout=0.5)
    finally:
        await dave.close()
        await alice.close()


async def test_rooms_that_move_to_a_new_group_are_redirected_and_resume_by_versions(
        cluster: tuple[Shared, Cluster]) -> None:
    shared, start = cluster
    e0 = await start("edge", "g0")
    e1 = await start("edge", "g1")
    await until(lambda: all(len(e.view.placement.groups) == 2 for e in (e0, e1)  # type: ignore[union-attr]
                            ), 5, "two groups")
    from room_router.placement import owner

    # Rooms that g2 will win once it joins, each joined at its current owner.
    rooms = [r for r in (f"mv-{i}" for i in range(200))
             if owner(r, ["g0", "g1", "g2"]) == "g2"][:3]
    assert len(rooms) == 3
    by_group = {"g0": e0, "g1": e1}
    clients: dict[str, LiveroomClient] = {}
    joined: dict[str, dict[str, Any]] = {}
    for r in rooms:
        await shared.store.apply(r, "meta", {"title": r})
        c = clients[r] = await client(by_group[owner(r, ["g0", "g1"]) or ""], f"m-{r}")
        joined[r] = await c.join(r)
        assert joined[r]["type"] == "joined"
    e2 = await start("edge", "g2")
    try:
        for r in rooms:
            red = await clients[r].expect("redirect", timeout=5, room=r)
            assert red["reason"] == "moved" and red["url"] == e2.public_url
            # A change made while the client moves: it comes back by versions.
            await shared.store.apply(r, "pinned", {"text": "while moving"})
            c = await LiveroomClient.connect(red["url"], token(f"m-{r}"))
            try:
                got = await c.join(r, known=joined[r]["versions"], epoch=joined[r]["epoch"])
                assert got["type"] == "joined" and got["recovered"] is True
                assert [s["section"] for s in got["sections"]] == ["pinned"]
            finally:
                await c.close()
    finally:
        for c in clients.values():
            await c.close()


async def test_recovery_is_honest_about_versions(cluster: tuple[Shared, Cluster]) -> None:
    shared, start = cluster
    edge = await start("edge", "g0")
    await shared.store.apply("hon", "meta", {"v": 1})
    c = await client(edge, "h")
    try:
        fresh = await c.join("hon")
        assert "recovered" not in fresh  # nothing to recover
        same = await c.request({"type": "sync", "room": "hon", "known": {"meta": 1},
                                "epoch": fresh["epoch"]}, "sync")
        assert same["recovered"] is True and same["sections"] == []
        other = await c.request({"type": "sync", "room": "hon", "known": {"meta": 1},
                                 "epoch": "another-epoch"}, "sync")
        assert other["recovered"] is False and other["reason"] == "epoch_changed"
        assert [s["section"] for s in other["sections"]] == ["meta"]
        ahead = await c.request({"type": "sync", "room": "hon", "known": {"meta": 7},
                                 "epoch": fresh["epoch"]}, "sync")
        assert ahead["recovered"] is False and ahead["reason"] == "versions_ahead"
        assert [s["section"] for s in ahead["sections"]] == ["meta"]
        unknown = await c.request({"type": "sync", "room": "hon", "known": {"meta": 1}},
                                  "sync")
        assert unknown["recovered"] is False and unknown["reason"] == "epoch_unknown"
    finally:
        await c.close()


async def test_kill_the_nats_node_of_an_edge_delivery_resumes_within_2s(
        cluster: tuple[Shared, Cluster], nats_cluster: NatsCluster) -> None:
    shared, start = cluster
    edges = await three_edges(start)
    room = "fault.nats"
    await shared.store.apply(room, "placement", {"spread": True})
    viewers = [await client(e, f"fv{i}") for i, e in enumerate(edges)]
    sender = await client(edges[0], "fsender")
    try:
        for c in [*viewers, sender]:
            assert (await c.join(room))["type"] == "joined"
        bus = edges[2].services.bus if edges[2].services else None
        assert isinstance(bus, NatsBus) and bus.connected_url is not None
        victim = nats_cluster.urls.index(bus.connected_url)
        counter = 0

        async def all_hear(timeout: float) -> float:
            """Send numbered comments until every viewer got one sent after
            the call started; returns the time it took."""
            nonlocal counter
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            first = counter + 1
            got = [False] * len(viewers)
            while not all(got):
                assert loop.time() - t0 < timeout, f"not every viewer heard in {timeout}s: {got}"
                counter += 1
                await sender.action(room, "comment", {"text": f"c-{counter}"})
                for i, v in enumerate(viewers):
                    try:
                        while not got[i]:
                            f = await v.recv(0.02)
                            if f.get("type") == "action" and \
                                    int(f["body"]["text"].split("-")[1]) >= first:
                                got[i] = True
                    except TimeoutError:
                        pass
            return loop.time() - t0

        await all_hear(10)  # the subscriptions crossed the routes
        nats_cluster.kill(victim)
        try:
            took = await all_hear(2.0)
            assert took < 2.0
            await until(lambda: bus.connected_url not in (None, nats_cluster.urls[victim]),
                        2, "edge 2 reconnected elsewhere")
        finally:
            nats_cluster.restart(victim)
    finally:
        for c in [*viewers, sender]:
            await c.close()


async def test_an_edge_holds_one_nats_subscription_per_room_while_it_has_members(
        cluster: tuple[Shared, Cluster], nats_cluster: NatsCluster) -> None:
    _, start = cluster
    edge = await start("edge", "g0", nats_index=1)
    bus = edge.services.bus if edge.services else None
    assert isinstance(bus, NatsBus)
    server = nats_cluster.nodes[nats_cluster.urls.index(str(bus.connected_url))]
    subject = f"{bus.prefix}.room.sub_2Ecount"  # room "sub.count", one token

    async def subs() -> int:
        await bus.flush()
        return (await asyncio.to_thread(server.subscriptions)).count(subject)

    a, b = await client(edge, "sa"), await client(edge, "sb")
    try:
        assert await subs() == 0
        await a.join("sub.count")
        await b.join("sub.count")
        await until(lambda: _eq(subs(), 1), 2, "one subscription for two members")
        await a.request({"type": "leave", "room": "sub.count"}, "left")
        assert await subs() == 1  # b is still there
        await b.request({"type": "leave", "room": "sub.count"}, "left")
        await until(lambda: _eq(subs(), 0), 2, "unsubscribed after the last leave")
    finally:
        await a.close()
        await b.close()


async def _eq(value: Awaitable[int], want: int) -> bool:
    return await value == want


async def test_an_edge_role_serves_webtransport_next_to_its_websocket(
        cluster: tuple[Shared, Cluster], tmp_path: Path) -> None:
    """``liveroom edge --quic-port …`` runs the same QUIC edge as ``liveroom
    serve``: a WebTransport viewer on one edge and a WebSocket viewer on
    another see the same actions of a room spread over both."""
    shared, start = cluster
    quic_edge = await start("edge", "g0", nats_index=0, dev=True, quic_port="0",
                            data_dir=tmp_path / "quic-edge")
    ws_edge = await start("edge", "g1", nats_index=1)
    assert ws_edge.quic is None  # off unless asked for
    assert quic_edge.quic is not None
    await until(lambda: all(len(e.view.placement.groups) == 2  # type: ignore[union-attr]
                            for e in (quic_edge, ws_edge)), 5, "both edges see 2 groups")
    async with aiohttp.ClientSession() as http, \
            http.get(f"{quic_edge.url}/v1/quic") as r:
        assert r.status == 200
        info = await r.json()
    assert info["port"] == quic_edge.quic.port and info["path"] == "/wt"
    room = "mixed.spread"
    await shared.store.apply(room, "placement", {"spread": True})
    over_wt = await LiveroomClient.connect(
        f"https://127.0.0.1:{info['port']}/wt", token("wt-viewer"),
        cert_sha256=info["cert_sha256"], timeout=5)
    over_ws = await client(ws_edge, "ws-viewer")
    try:
        assert (await over_wt.join(room))["type"] == "joined"
        assert (await over_ws.join(room))["type"] == "joined"
        # The edges' room subscriptions reach NATS (and cross its routes)
        # asynchronously: warm up each way until an action gets through.
        for sender, receiver in ((over_ws, over_wt), (over_wt, over_ws)):
            for i in range(50):
                await sender.action(room, "like", {"warm": i})
                try:
                    await receiver.expect("action", 0.2, room=room, kind="like")
                    break
                except TimeoutError:
                    continue
            else:
                raise AssertionError("no action crossed between the edges in 10 s")
        await over_ws.action(room, "comment", {"text": "from the websocket edge"})
        got = await over_wt.expect("action", 5, room=room,
                                   body={"text": "from the websocket edge"})
        await over_wt.action(room, "gift", {"gift": "rose"})
        got = await over_ws.expect("action", 5, room=room, kind="gift")
        assert got["body"] == {"gift": "rose", "count": 1}
    finally:
        await over_wt.close()
        await over_ws.close()
