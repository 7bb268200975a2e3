"""Peer messages: online and offline delivery, acks, restart, privacy."""

from __future__ import annotations

import asyncio

from edge.client import LiveroomClient
from tests.support import LiveServer


async def no_frame_of(client: LiveroomClient, ftype: str, within: float) -> bool:
    """True when no frame of ``ftype`` arrives within ``within`` seconds
    (a ping round trip closes the window, so the wait is bounded and exact)."""
    pong = await client.request({"type": "ping", "t": "probe"}, "pong", timeout=within)
    assert pong["type"] == "pong"
    return all(f.get("type") != ftype for f in list(client._pending))


async def test_online_delivery_to_every_connection_of_the_addressee_only(
        server: LiveServer, connect) -> None:
    alice = await connect(server, "p-alice")
    bob1 = await connect(server, "p-bob")
    bob2 = await connect(server, "p-bob", codec="json")
    eve = await connect(server, "p-eve")
    for c in (alice, bob1, bob2, eve):
        await c.join("p-room")  # all in one room: a peer message is still private
    ack = await alice.peer("p-bob", {"text": "hi bob"}, "a-1")
    assert ack["type"] == "peer_ack" and ack["id"] == "a-1" and ack["seq"] > 0
    assert ack["duplicate"] is False
    for bob in (bob1, bob2):
        got = await bob.expect("peer")
        assert got["body"] == {"text": "hi bob"} and got["from"]["id"] == "p-alice"
        assert got["seq"] == ack["seq"] and got["id"] == "a-1"
    assert await no_frame_of(eve, "peer", 2)
    assert await no_frame_of(alice, "peer", 2)


async def test_retry_with_the_same_id_is_not_delivered_twice(server: LiveServer,
                                                             connect) -> None:
    a = await connect(server, "d-a")
    b = await connect(server, "d-b")
    first = await a.peer("d-b", "one", "same-id")
    again = await a.peer("d-b", "one", "same-id")
    assert again["seq"] == first["seq"] and again["duplicate"] is True
    assert (await b.expect("peer"))["seq"] == first["seq"]
    assert await no_frame_of(b, "peer", 2)


async def test_offline_messages_arrive_once_in_order_after_reconnect(
        server: LiveServer, connect, http) -> None:
    a = await connect(server, "o-a")
    seqs = [(await a.peer("o-b", {"n": i}, f"o-{i}"))["seq"] for i in range(5)]
    b = await LiveroomClient.connect(server.ws_url, server.token("o-b"), session=http)
    got = [await b.expect("peer") for _ in range(5)]
    assert [g["body"]["n"] for g in got] == list(range(5))
    assert [g["seq"] for g in got] == seqs
    # Not acknowledged: a reconnect gets them again (nothing is lost)...
    await b.close()
    b = await LiveroomClient.connect(server.ws_url, server.token("o-b"), session=http)
    again = [await b.expect("peer") for _ in range(5)]
    assert [g["seq"] for g in again] == seqs
    # ...acknowledged up to the last: the next connect gets nothing.
    await b.send({"type": "peer_ack", "upto": seqs[-1]})
    await b.request({"type": "ping"}, "pong")  # the ack is processed before the pong
    await b.close()
    b = await LiveroomClient.connect(server.ws_url, server.token("o-b"), session=http)
    assert await no_frame_of(b, "peer", 2)
    # A later message still comes live.
    ack = await a.peer("o-b", {"n": 99}, "o-99")
    assert (await b.expect("peer"))["seq"] == ack["seq"]
    await b.close()


async def test_inbox_survives_a_restart_of_the_process(make_server, http, tmp_path) -> None:
    data = tmp_path / "restart-data"
    srv = make_server(data_dir=data)
    a = await LiveroomClient.connect(srv.ws_url, srv.token("r-a"), session=http)
    acks = [await a.peer("r-b", {"n": i}, f"r-{i}") for i in range(3)]
    await a.close()
    srv.kill()  # abrupt: no clean shutdown
    srv2 = make_server(data_dir=data)
    b = await LiveroomClient.connect(srv2.ws_url, srv2.token("r-b"), session=http)
    got = [await b.expect("peer") for _ in range(3)]
    assert [g["seq"] for g in got] == [x["seq"] for x in acks]
    assert [g["body"]["n"] for g in got] == [0, 1, 2]
    await b.send({"type": "peer_ack", "upto": got[-1]["seq"]})
    await b.request({"type": "ping"}, "pong")
    await b.close()
    srv2.stop()
    srv3 = make_server(data_dir=data)
    b = await LiveroomClient.connect(srv3.ws_url, srv3.token("r-b"), session=http)
    assert await no_frame_of(b, "peer", 2)  # acked before the restart: delivered once
    await b.close()


async def test_messages_sent_while_replaying_keep_their_order(server: LiveServer,
                                                              connect, http) -> None:
    a = await connect(server, "rp-a")
    for i in range(50):
        assert (await a.peer("rp-b", {"n": i}, f"rp-{i}"))["type"] == "peer_ack"

    async def more() -> None:
        for i in range(50, 60):
            assert (await a.peer("rp-b", {"n": i}, f"rp-{i}"))["type"] == "peer_ack"

    sender = asyncio.create_task(more())
    b = await LiveroomClient.connect(server.ws_url, server.token("rp-b"), session=http)
    await asyncio.wait_for(sender, 10)
    got = [(await b.expect("peer"))["body"]["n"] for _ in range(60)]
    assert got == list(range(60))
    await b.close()
