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
    async def join(cls, url: str, user: str, room: str, **kw: Any) -> Viewer:
        client = await Client.connect(url, tokens(user), backoff=Backoff(0.05, 0.5), **FAST,
                                      **kw)
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
