"""The edge's own WebSocket connections (edge/ws_conn.py) on a real socket:
an in-process ``liveroom serve`` app behind ``EdgeSite`` on an ephemeral
port, with a short WebSocket heartbeat, spoken to byte by byte by a raw
client (RFC 6455 frames built here), so every rule of the own path is seen
on the wire: the handshake, pings both ways, the heartbeat drop, the close
codes, and everything that is not an upgrade still reaching aiohttp."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from edge.config import EdgeConfig, HttpTimeouts
from tests.support import in_process_edge, metric, token
from tests.unit.test_ws_framing import client_frame

HEARTBEAT = 0.4
HELLO_TIMEOUT = 1.0
T = 5.0


@dataclass
class Edge:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    config = EdgeConfig(heartbeat=HEARTBEAT, hello_timeout=HELLO_TIMEOUT,
                        http=HttpTimeouts(head=HELLO_TIMEOUT))
    async with in_process_edge(tmp_path, config) as port:
        yield Edge(port)


class Raw:
    """One TCP connection, frames by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def upgrade(cls, edge: Edge, extra: bytes = b"") -> tuple[Raw, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     f"Sec-WebSocket-Key: {key}\r\n\r\n".encode() + extra)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), T)
        return cls(reader, writer), head

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def frame(self, timeout: float = T) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame; ``(-1, b"")`` at EOF."""
        try:
            b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        except asyncio.IncompleteReadError:
            return -1, b""
        assert not b1 & 0x80, "server frames are never masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def until(self, op: int, timeout: float = T) -> bytes:
        while True:
            got, payload = await self.frame(timeout)
            assert got != -1, f"EOF before opcode {op}"
            if got == op:
                return payload

    def hello(self, user: str) -> None:
        self.send(client_frame(json.dumps({"type": "hello", "v": 1,
                                           "token": token(user)}).encode(), 0x1))

    def close(self) -> None:
        self.writer.close()


async def test_handshake_and_a_pipelined_hello(edge: Edge, http: aiohttp.ClientSession) -> None:
    hello = client_frame(json.dumps({"type": "hello", "v": 1, "token": token("ann")}).encode(),
                         0x1)
    c, head = await Raw.upgrade(edge, extra=hello)  # the hello in the same packet
    try:
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"Sec-WebSocket-Accept: " in head
        welcome = json.loads(await c.until(0x1))
        assert welcome["type"] == "welcome" and welcome["user"]["id"] == "ann"
        assert await metric(http, edge.url, "liveroom_ws_upgrades_total", path="own") == 1
    finally:
        c.close()


async def test_pings_both_ways_and_the_heartbeat_drop(edge: Edge) -> None:
    c, _ = await Raw.upgrade(edge)
    try:
        c.hello("bob")
        await c.until(0x1)
        c.send(client_frame(b"probe", 0x9))
        assert await c.until(0xA) == b"probe"  # the client's ping answered
        # Silence: the server pings after HEARTBEAT s; a pong keeps it open.
        assert await c.until(0x9, timeout=HEARTBEAT * 3) == b""
        c.send(client_frame(b"", 0xA))
        assert await c.until(0x9, timeout=HEARTBEAT * 3) == b""
        # No pong this time: dropped within half a period, with no close frame.
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        op, _ = await c.frame(timeout=HEARTBEAT * 3)
        assert op == -1, f"expected EOF, got opcode {op}"
        assert loop.time() - t0 < HEARTBEAT * 1.5
    finally:
        c.close()


@pytest.mark.parametrize(("frame", "code"), [
    (client_frame(b'{"type": "ping"}', 0x1, masked=False), 1002),
    (client_frame(b"x", 0x1, rsv=0x40), 1002),
    (client_frame(b"\xff\xfe", 0x1), 1007),
    (struct.pack("!BBQ", 0x82, 0xFF, 1 << 30) + b"mask", 1009),  # 1 GB announced
    # A message in more fragments than the cap (empty ones weigh nothing).
    (client_frame(b"a", 0x1, fin=False) + client_frame(b"", 0x0, fin=False) * 2000, 1009),
])
async def test_violations_close_with_their_code(edge: Edge, frame: bytes, code: int) -> None:
    c, _ = await Raw.upgrade(edge)
    try:
        c.hello("cy")
        await c.until(0x1)
        c.send(frame)
        payload = await c.until(0x8)
        assert struct.unpack("!H", payload[:2])[0] == code
        assert (await c.frame())[0] == -1  # and the connection ends
    finally:
        c.close()


async def test_a_client_close_is_answered_and_ends_the_session(
        edge: Edge, http: aiohttp.ClientSession) -> None:
    c, _ = await Raw.upgrade(edge)
    c.hello("dee")
    await c.until(0x1)
    c.send(client_frame(struct.pack("!H", 1000) + b"bye", 0x8))
    assert struct.unpack("!H", (await c.until(0x8))[:2])[0] == 1000
    assert (await c.frame())[0] == -1
    c.close()
    for _ in range(100):
        if await metric(http, edge.url, "liveroom_connections") == 0:
            break
        await asyncio.sleep(0.02)
    assert await metric(http, edge.url, "liveroom_connections") == 0


async def test_the_rest_still_reaches_aiohttp(edge: Edge, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{edge.url}/healthz") as r:
        assert r.status == 200
    # A bad upgrade (version 99) is aiohttp's to refuse, with our error body.
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Version: 99\r\nSec-WebSocket-Key: "
                 + base64.b64encode(os.urandom(16)) + b"\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(4096), T)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b'"code": "invalid_field"' in answer or b'"code":"invalid_field"' in answer, answer
    writer.close()
    # A WebSocket through aiohttp's client on a fresh session: the own path,
    # messages both ways with another client on a pooled (aiohttp) connection.
    await http.get(f"{edge.url}/healthz")
    async with aiohttp.ClientSession() as fresh, \
            fresh.ws_connect(f"{edge.url}/ws") as a, http.ws_connect(f"{edge.url}/ws") as b:
        for ws, user in ((a, "eve"), (b, "fay")):
            await ws.send_str(json.dumps({"type": "hello", "v": 1, "token": token(user)}))
            assert json.loads((await ws.receive(T)).data)["type"] == "welcome"
            await ws.send_str(json.dumps({"type": "join", "room": "r1"}))
            assert json.loads((await ws.receive(T)).data)["type"] == "joined"
        await b.send_str(json.dumps({"type": "action", "room": "r1", "kind": "comment",
                                     "body": {"text": "across the paths"}}))
        for ws in (a, b):
            while (f := json.loads((await ws.receive(T)).data))["type"] != "action":
                pass
            assert f["body"] == {"text": "across the paths"}
    assert await metric(http, edge.url, "liveroom_ws_upgrades_total", path="own") >= 1
    assert await metric(http, edge.url, "liveroom_ws_upgrades_total", path="aiohttp") >= 1


async def test_a_connection_that_sends_no_request_is_closed(edge: Edge) -> None:
    """Silent, or stuck in the middle of a request head: closed after the
    head timeout; a connection that was upgraded in time is not."""
    loop = asyncio.get_running_loop()
    c, _ = await Raw.upgrade(edge)
    c.hello("gus")
    assert json.loads(await c.until(0x1))["type"] == "welcome"

    async def keep_answering() -> int:
        """Answer the heartbeat's pings; the opcode that ended the wait."""
        while True:
            op, payload = await c.frame(timeout=HELLO_TIMEOUT * 5)
            if op == 0x9:
                c.send(client_frame(payload, 0xA))
            elif op in (-1, 0x8):
                return op

    answering = asyncio.create_task(keep_answering())
    silent = await asyncio.open_connection("127.0.0.1", edge.port)
    partial = await asyncio.open_connection("127.0.0.1", edge.port)
    partial[1].write(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # never finished
    t0 = loop.time()
    try:
        for reader, _w in (silent, partial):
            assert await asyncio.wait_for(reader.read(), HELLO_TIMEOUT * 3) == b""
        assert loop.time() - t0 < HELLO_TIMEOUT * 3
        await asyncio.sleep(HELLO_TIMEOUT * 0.5)  # past the front door's timeout
        assert not answering.done(), f"the upgraded connection ended: {answering.result()}"
    finally:
        answering.cancel()
        for _r, writer in (silent, partial):
            writer.close()
        c.close()


async def test_a_ping_flood_gets_one_pong_per_packet_at_most(edge: Edge) -> None:
    """Pongs are the one thing a client can make the server write without
    the node's budget: the latest ping of each packet is answered, so 5,000
    pings in one write get a few pongs, not 5,000 (RFC 6455 5.5.3)."""
    c, _ = await Raw.upgrade(edge)
    try:
        c.hello("pia")
        await c.until(0x1)
        c.send(b"".join(client_frame(b"%d" % i, 0x9) for i in range(5000)))
        pongs = [await c.until(0xA)]
        while pongs[-1] != b"4999":  # the latest one is answered
            pongs.append(await c.until(0xA))
        c.send(client_frame(b"\x03\xe8", 0x8))
        while (got := await c.frame())[0] not in (-1, 0x8):
            if got[0] == 0xA:
                pongs.append(got[1])
        assert len(pongs) <= 50, len(pongs)
    finally:
        c.close()
