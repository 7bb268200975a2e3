"""The Python SDK (clients/python) against a real ``liveroom serve``:
the server SIGKILLed and started again on the same port and data dir while
clients over both transports and both codecs are in a room whose state keeps
changing: every client ends with the server's final versions and every peer
message exactly once. Then token renewal without a drop, and the room
features (presence, history, retract, ``left`` reasons, client ids)."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clients.python import Backoff, Client, Room
from tests.support import LiveServer, free_port, token, until

ROOMY = ("--action-burst", "200", "--action-rate", "200", "--peer-burst", "200",
         "--peer-rate", "200")
FAST = {"heartbeat": 0.3, "timeout": 5.0}


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tokens(user: str, ttl: float = 3600.0, rooms: dict[str, str] | None = None) -> Any:
    """A token provider: a fresh token on every call, as a backend mints them."""
    return lambda: token(user, ttl=ttl, rooms=rooms)


async def head(http: aiohttp.ClientSession, srv: LiveServer, room: str) -> dict[str, Any]:
    async with http.get(f"{srv.url}/v1/rooms/{room}/state") as r:
        body: dict[str, Any] = await r.json()
        assert r.status == 200, body
        return body


class Viewer:
    """An SDK client in one room that records what the application got."""

    def __init__(self, client: Client, room: Room) -> None:
        self.client = client
        self.room = room
        self.peers: list[dict[str, Any]] = []
        self.resumes: list[tuple[bool, str | None]] = []
        client.on("peer", self.peers.append)
        room.on("resumed", lambda ok, why: self.resumes.append((ok, why)))

    @classmethod
    async def join(cls, url: str, user: str, room: str, ttl: float = 3600.0,
                   **kw: Any) -> Viewer:
        client = await Client.connect(url, tokens(user, ttl), backoff=Backoff(0.05, 0.5),
                                      **FAST, **kw)
        return cls(client, await client.join(room))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_serve_sigkilled_and_restarted_every_client_converges_peers_exactly_once(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    port, quic = free_port(), free_udp_port()
    srv = LiveServer(tmp_path / "data", "--port", str(port), "--quic-port", str(quic),
                     "--no-agents", *ROOMY).start()
    room = "sdk-restart"
    viewers: list[Viewer] = []
    writer: Client | None = None
    try:
        assert srv.quic_port == quic and srv.cert_sha256
        ws, wt = srv.ws_url, srv.wt_url
        for i, (url, codec) in enumerate(itertools.product((ws, wt), ("msgpack", "json"))):
            extra = {"cert_sha256": srv.cert_sha256} if url == wt else {}
            viewers.append(await Viewer.join(url, f"v{i}", room, codec=codec, **extra))
        writer = await Client.connect(ws, tokens("w", rooms={room: "host"}),
                                      backoff=Backoff(0.05, 0.5), **FAST)
        wroom = await writer.join(room)
        stop = asyncio.Event()

        async def write() -> None:
            """State changes all along, across the kill, in two sections."""
            for n in itertools.count():
                if stop.is_set():
                    return
                try:
                    await wroom.set("score" if n % 3 else "meta", {"n": n})
                except Exception:
                    pass  # no connection for a while: the next write goes on
                await asyncio.sleep(0.02)

        async def send_peers(first: int, last: int) -> None:
            for k in range(first, last):
                for i in range(len(viewers)):
                    ack = await writer.send_peer(f"v{i}", {"k": k}, f"m{k}", timeout=30)
                    assert ack["type"] == "peer_ack"

        writing = asyncio.create_task(write())
        await send_peers(0, 5)
        await until(lambda: all(len(v.peers) == 5 for v in viewers), 10, "peers before")
        before = await head(http, srv, room)

        srv.kill()
        # Peer messages sent while the server is down: send_peer waits and
        # retries them with the same id once it is back.
        sending = asyncio.create_task(send_peers(5, 10))
        await until(lambda: not any(v.client.connected for v in viewers), 10,
                    "every client saw the server die")
        srv.start()
        await sending
        await until(lambda: all(v.client.connected for v in viewers), 15, "all reconnected")
        await send_peers(10, 15)
        await asyncio.sleep(0.3)  # a few more writes after the restart
        stop.set()
        await writing
        await wroom.set("meta", {"final": True})

        async def converged() -> bool:
            h = await head(http, srv, room)
            return all(v.room.versions == h["versions"] and v.room.epoch == h["epoch"]
                       for v in viewers)

        await until(converged, 15, "every client holds the final versions")
        final = await head(http, srv, room)
        assert final["epoch"] != before["epoch"], "the memory store started over"
        for v in viewers:
            assert v.room.values["meta"] == {"final": True}
            assert sum(v.room.versions.values()) == final["total"]
            # The rejoin after the restart said the state was replaced.
            assert (False, "epoch_changed") in v.resumes, v.resumes
            assert v.client.connects >= 2
        await until(lambda: all(len(v.peers) >= 15 for v in viewers), 15, "peers after")
        await asyncio.sleep(0.3)  # room for a duplicate to show up
        for v in viewers:
            assert [p["body"]["k"] for p in v.peers] == list(range(15)), v.peers
    finally:
        for v in viewers:
            await v.client.close()
        if writer is not None:
            await writer.close()
        srv.stop()


async def test_token_renewed_before_expiry_without_a_drop_and_peers_once(
        server: LiveServer) -> None:
    """Tokens of 4 s: the client renews its connection (make before break)
    several times; the application sees no disconnect, the room stays
    joined, and peer messages sent all along arrive once each."""
    room = "sdk-renew"
    drops: list[Any] = []
    viewer = await Viewer.join(server.ws_url, "renewer", room, ttl=4)
    viewer.client.on("disconnect", drops.append)
    sender = await Client.connect(server.ws_url, tokens("renew-sender"), **FAST)
    try:
        for k in range(40):
            await sender.send_peer("renewer", {"k": k}, f"r{k}")
            await asyncio.sleep(0.2)
        assert viewer.client.connects >= 3, "renewed at least twice in 8 s"
        assert drops == [], "a renewal is not a disconnect"
        assert viewer.room.joined.is_set()
        await until(lambda: len(viewer.peers) >= 40, 10, "every peer message")
        await asyncio.sleep(0.3)
        assert [p["body"]["k"] for p in viewer.peers] == list(range(40)), viewer.peers
    finally:
        await viewer.client.close()
        await sender.close()


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_room_features_presence_history_retract_client_id_and_left_reasons(
        tmp_path: Path, codec: str) -> None:
    config = tmp_path / "rooms.toml"
    config.write_text('[rooms."feat-*"]\nhistory = 10\npresence = true\n')
    room = "feat-1"
    with LiveServer(tmp_path / "data", "--rooms-config", str(config), "--no-agents",
                    *ROOMY) as srv:
        host = await Client.connect(srv.ws_url, tokens("h", rooms={room: "host"}),
                                    codec=codec, **FAST)
        v = await Viewer.join(srv.ws_url, "v", room, codec=codec)
        v2: Viewer | None = None
        try:
            hroom = await host.join(room)
            actions: list[dict[str, Any]] = []
            v.room.on("action", actions.append)
            await until(lambda: v.room.presence is not None and "h" in v.room.presence, 5,
                        "the host in the viewer's presence list")
            await hroom.send("comment", {"text": "first"}, client_id="c-1")
            await until(lambda: actions, 5, "the comment")
            assert actions[0]["client_id"] == "c-1" and actions[0]["body"] == {"text": "first"}
            v2 = await Viewer.join(srv.ws_url, "v2", room, codec=codec)
            assert [a["id"] for a in v2.room.history] == [actions[0]["id"]]
            retracted: list[str] = []
            v2.room.on("retract", retracted.append)
            moderated = await hroom.moderate("retract", action_id=actions[0]["id"])
            assert moderated["type"] == "moderated"
            await until(lambda: retracted, 5, "the retract")
            assert retracted == [actions[0]["id"]] and v2.room.history == []
            lefts: list[dict[str, Any]] = []
            v.room.on("left", lefts.append)
            assert (await hroom.moderate("kick", user="v"))["type"] == "moderated"
            await until(lambda: lefts, 5, "v kicked")
            assert lefts[0]["reason"] == "kicked" and room not in v.client.rooms
            assert (await hroom.moderate("ban", user="v2"))["type"] == "moderated"
            await until(lambda: v2 is not None and v2.room.left is not None, 5, "v2 banned")
            assert v2.room.left is not None and v2.room.left["reason"] == "banned"
            assert v.client.connected and v2.client.connected  # only the room was left
        finally:
            await host.close()
            await v.client.close()
            if v2 is not None:
                await v2.client.close()
