"""Rooms over real WebSockets: isolation, several rooms per connection, leave,
online counts, rate limits and the backend publish API."""

from __future__ import annotations

import asyncio
import json

import pytest

from edge.client import LiveroomClient
from tests.support import API_KEY, LiveServer, metric


async def test_two_rooms_never_see_each_others_actions(server: LiveServer, connect) -> None:
    a1 = await connect(server, "iso-a1")
    a2 = await connect(server, "iso-a2", codec="json")
    b1 = await connect(server, "iso-b1")
    for c, room in ((a1, "iso-A"), (a2, "iso-A"), (b1, "iso-B")):
        assert (await c.join(room))["type"] == "joined"
    for i in range(5):
        await a1.action("iso-A", "comment", {"text": f"A{i}"})
        await b1.action("iso-B", "comment", {"text": f"B{i}"})
    got_a = [(await a2.expect("action"))["body"]["text"] for _ in range(5)]
    got_b = [(await b1.expect("action"))["body"]["text"] for _ in range(5)]
    assert got_a == [f"A{i}" for i in range(5)]
    assert got_b == [f"B{i}" for i in range(5)]
    # Nothing from room B ever reached a member of room A: a marker sent last
    # in A arrives next, with no B action before it.
    await a1.action("iso-A", "comment", {"text": "end"})
    while (frame := await a2.recv(3)).get("type") != "action":
        pass
    assert frame["room"] == "iso-A" and frame["body"]["text"] == "end"


async def test_one_connection_in_several_rooms_and_leave(server: LiveServer, connect) -> None:
    multi = await connect(server, "multi-1")
    other = await connect(server, "multi-2", "host")
    await multi.join("m-1")
    await multi.join("m-2")
    await other.join("m-1")
    await other.join("m-2")
    await other.action("m-1", "like", None)
    await other.action("m-2", "gift", {"gift": "rose", "count": 2})
    a = await multi.expect("action", room="m-1")
    b = await multi.expect("action", room="m-2")
    assert a["kind"] == "like" and b["body"] == {"gift": "rose", "count": 2}
    left = await multi.request({"type": "leave", "room": "m-1"}, "left")
    assert left["type"] == "left" and left["room"] == "m-1"
    await other.action("m-1", "comment", {"text": "after leave"})
    await other.action("m-2", "comment", {"text": "still here"})
    got = await multi.expect("action")
    assert got["room"] == "m-2" and got["body"]["text"] == "still here"
    err = await multi.request({"type": "action", "room": "m-1", "kind": "like"}, "x")
    assert err["code"] == "not_joined"


async def test_actions_are_stamped_by_the_server(server: LiveServer, connect) -> None:
    a = await connect(server, "stamp-a")
    await a.join("stamp")
    await a.send({"type": "action", "room": "stamp", "kind": "comment",
                  "body": {"text": "x"}, "from": {"id": "someone-else"}, "seq": 999})
    got = await a.expect("action")
    assert got["from"] == {"id": "stamp-a", "name": "stamp-a", "role": "viewer"}
    assert got["seq"] != 999 and isinstance(got["ts"], float)
    await a.action("stamp", "custom.poll", {"q": "yes?"})
    got2 = await a.expect("action")
    assert got2["kind"] == "custom.poll" and got2["seq"] == got["seq"] + 1


async def test_online_count_is_broadcast_when_it_changes(make_server, http) -> None:
    srv = make_server("--online-interval", "0.2")
    clients = [await LiveroomClient.connect(srv.ws_url, srv.token(f"on-{i}"), session=http)
               for i in range(3)]
    try:
        for c in clients:
            await c.join("online-room")
        assert (await clients[0].expect("online", timeout=3, count=3))["room"] == "online-room"
        await clients[2].close()
        await clients[0].expect("online", timeout=3, count=2)
    finally:
        for c in clients:
            await c.close()


async def test_rate_limit_gives_an_error_and_keeps_the_connection(make_server, http) -> None:
    srv = make_server("--action-rate", "1", "--action-burst", "3")
    c = await LiveroomClient.connect(srv.ws_url, srv.token("rl-1"), session=http)
    try:
        await c.join("rl")
        for i in range(3):
            await c.action("rl", "comment", {"text": str(i)})
        err = await c.request({"type": "action", "room": "rl", "kind": "comment",
                               "body": {"text": "over"}}, "x")
        assert err["type"] == "error" and err["code"] == "rate_limited"
        assert 0 < err["retry_after"] <= 1.0 and err["advice"] == "retry"
        # Exactly the three allowed comments were delivered, not the fourth.
        texts = [(await c.expect("action"))["body"]["text"] for _ in range(3)]
        assert texts == ["0", "1", "2"]
        # The connection stays and works once the bucket refills.
        pong = await c.request({"type": "ping", "t": 1}, "pong")
        assert pong["t"] == 1
        await asyncio.sleep(err["retry_after"])  # the documented back-off itself
        await c.action("rl", "comment", {"text": "later"})
        assert (await c.expect("action"))["body"]["text"] == "later"
        # Another user is not limited by this one.
        d = await LiveroomClient.connect(srv.ws_url, srv.token("rl-2"), session=http)
        await d.join("rl")
        await d.action("rl", "comment", {"text": "d"})
        assert (await d.expect("action", timeout=3))["from"]["id"] == "rl-2"
        await d.close()
    finally:
        await c.close()


async def test_backend_api_publishes_through_the_same_fanout(server: LiveServer, connect,
                                                             http) -> None:
    v = await connect(server, "api-viewer", codec="json")
    await v.join("api-room")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    for _i in range(30):  # well over any per-user limit: the API has none
        async with http.post(f"{server.url}/v1/rooms/api-room/actions", headers=headers,
                             json={"kind": "gift", "body": {"gift": "car", "count": 1},
                                   "sender": {"id": "pay-svc", "name": "Payments"}}) as r:
            assert r.status == 202, await r.text()
    seqs = [(await v.expect("action", kind="gift"))["seq"] for _ in range(30)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 30
    async with http.post(f"{server.url}/v1/rooms/api-room/actions", headers=headers,
                         json={"kind": "system.notice", "body": {"text": "maintenance"}}) as r:
        assert r.status == 202
    got = await v.expect("action", kind="system.notice")
    assert got["from"]["role"] == "system"
    assert await metric(http, server.url, "liveroom_actions_total", kind="gift") >= 30


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_ping_pong(server: LiveServer, connect, codec: str) -> None:
    c = await connect(server, f"ping-{codec}", codec=codec)
    pong = await c.request({"type": "ping", "t": "abc"}, "pong")
    assert pong["t"] == "abc" and pong["ts"] > 0


async def test_health_and_metrics(server: LiveServer, http) -> None:
    async with http.get(f"{server.url}/healthz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"
    async with http.get(f"{server.url}/metrics") as r:
        text = await r.text()
    for name in ("liveroom_connections", "liveroom_rooms", "liveroom_frames_in_total",
                 "liveroom_frames_out_total", "liveroom_actions_dropped_total",
                 "liveroom_fanout_seconds_bucket"):
        assert name in text


async def test_the_demo_scoreboard_counts_gifts_and_likes(server: LiveServer, connect) -> None:
    c = await connect(server, "score-fan")
    joined = await c.join("demo")
    start = next(s["value"] for s in joined["sections"] if s["section"] == "scoreboard")
    await c.action("demo", "gift", {"gift": "rose", "count": 3})
    await c.action("demo", "like", {"count": 2})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:  # bounded: the keeper writes at most once a second
        state = await c.expect("state", timeout=deadline - loop.time(), section="scoreboard")
        if state["value"] == {"gifts": start["gifts"] + 3, "likes": start["likes"] + 2}:
            break


async def test_a_burst_arrives_as_batch_frames_the_client_unpacks(make_server, http) -> None:
    """Coalescing: messages that follow a write within the window go out as
    one batch frame per connection; the Python client yields them in order."""
    srv = make_server("--coalesce-window", "0.2")
    raw = await http.ws_connect(srv.ws_url)
    await raw.send_str(json.dumps({"type": "hello", "token": srv.token("b-raw")}))
    assert json.loads((await raw.receive(timeout=5)).data)["type"] == "welcome"
    await raw.send_str(json.dumps({"type": "join", "room": "burst"}))
    assert json.loads((await raw.receive(timeout=5)).data)["type"] == "joined"
    client = await LiveroomClient.connect(srv.ws_url, srv.token("b-client"), session=http)
    await client.join("burst")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    for i in range(8):
        async with http.post(f"{srv.url}/v1/rooms/burst/actions", headers=headers,
                             json={"kind": "comment", "body": {"text": str(i)}}) as r:
            assert r.status == 202
    got = [(await client.expect("action"))["body"]["text"] for _ in range(8)]
    assert got == [str(i) for i in range(8)]
    frames, wire = [], 0
    while len(frames) < 8:
        msg = json.loads((await raw.receive(timeout=5)).data)
        wire += 1
        frames.extend(msg["frames"] if msg["type"] == "batch" else [msg])
    assert [f["body"]["text"] for f in frames] == [str(i) for i in range(8)]
    assert wire < 8  # fewer frames on the wire than messages: coalesced
    await raw.close()
    await client.close()
