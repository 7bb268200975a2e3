"""A client that stops reading is closed with SLOW_CONSUMER (4100) without
slowing anyone else down, over real sockets against a real server process.

The slow client has to stop reading at the TCP level: aiohttp's client keeps
reading into its own queue whatever the test does, so the slow one here is a
bare socket with a small receive buffer that speaks just enough WebSocket
(handshake, masked hello and join) and then never calls recv() again. The
loopback kernel buffers still absorb a few MB before the server's transport
starts to hold bytes, so each test publishes until the server reports the
close, with a bound on time and bytes.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgpack
import pytest

from edge.client import LiveroomClient
from tests.support import API_KEY, LiveServer, metric

pytestmark = pytest.mark.timeout(60)

BUDGET = 65536
BLOB = "x" * 8000
FLOOD_SECONDS = 6.0  # publish at most this long waiting for the close
FLOOD_BYTES = 64 << 20  # ... and at most this many bytes of bodies
MAX_LATENCY = 1.0  # seconds from the server's stamp to the fast client's hands
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------
# A WebSocket client that reads only when told to
# --------------------------------------------------------------------------
def _masked(payload: bytes, opcode: int = 0x2) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = (key * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
    return head + key + body


class RawWs:
    """A bare-socket WebSocket client. Nothing reads from the socket unless a
    method here is awaited, so the server really sees a client that stops."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def connect(cls, srv: LiveServer, rcvbuf: int = 4096) -> RawWs:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect(), so that the window it advertises is small from the start.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        ws = cls(sock)
        await ws.loop.sock_connect(sock, ("127.0.0.1", srv.port))
        key = base64.b64encode(os.urandom(16)).decode()
        await ws.loop.sock_sendall(sock, (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        while b"\r\n\r\n" not in ws.buf:
            await ws._fill()
        end = ws.buf.index(b"\r\n\r\n") + 4
        head = bytes(ws.buf[:end]).decode("latin-1")
        del ws.buf[:end]
        assert head.startswith("HTTP/1.1 101"), head
        return ws

    async def _fill(self) -> None:
        chunk = await self.loop.sock_recv(self.sock, 1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the socket")
        self.buf += chunk

    async def _need(self, n: int) -> None:
        while len(self.buf) < n:
            await self._fill()

    async def recv_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame (never masked)."""
        await self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n, off = b1 & 0x7F, 2
        if n == 126:
            await self._need(4)
            n, off = struct.unpack_from("!H", self.buf, 2)[0], 4
        elif n == 127:
            await self._need(10)
            n, off = struct.unpack_from("!Q", self.buf, 2)[0], 10
        await self._need(off + n)
        payload = bytes(self.buf[off:off + n])
        del self.buf[:off + n]
        return b0 & 0x0F, payload

    async def send(self, frame: dict[str, Any]) -> None:
        await self.loop.sock_sendall(self.sock, _masked(msgpack.packb(frame)))

    async def expect(self, ftype: str) -> dict[str, Any]:
        while True:
            opcode, payload = await self.recv_frame()
            assert opcode == 0x2, (opcode, payload[:200])
            frame: dict[str, Any] = msgpack.unpackb(payload, raw=False)
            if frame.get("type") == ftype:
                return frame
            assert frame.get("type") != "error", frame

    async def close_code(self) -> int:
        """Read (and discard) everything up to the server's close frame."""
        while True:
            opcode, payload = await self.recv_frame()
            if opcode == 0x8:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code

    def abort(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------
# The fast client's view of the room
# --------------------------------------------------------------------------
class FastReader:
    """Reads everything a fast client gets, noting when each message came."""

    def __init__(self, client: LiveroomClient, room: str) -> None:
        self.client = client
        self.room = room
        self.seqs: list[int] = []
        self.partials: list[int] = []
        self.latencies: list[float] = []
        self.online: list[int] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            frame = await self.client.recv(timeout=30)
            now = time.time()
            ftype = frame.get("type")
            if frame.get("room") != self.room:
                continue
            if ftype == "action":
                self.seqs.append(frame["seq"])
                self.latencies.append(now - frame["ts"])
            elif ftype == "state":
                self.partials.append(frame["partial"])
                self.latencies.append(now - frame["value"]["t"])
            elif ftype == "online":
                self.online.append(frame["count"])
            self.changed.set()

    async def wait_for(self, what: str, pred: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                if self.task.done():
                    self.task.result()
                    raise AssertionError("the fast reader stopped")
                self.changed.clear()
                await self.changed.wait()
        assert pred(), what

    async def stop(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


# --------------------------------------------------------------------------
# Publishers: one message into the room through the backend API
# --------------------------------------------------------------------------
Publish = Callable[[aiohttp.ClientSession, LiveServer, str, int], Awaitable[tuple[str, int, int]]]


async def _post_action(http: aiohttp.ClientSession, srv: LiveServer, room: str,
                       kind: str, body: Any) -> int:
    async with http.post(f"{srv.url}/v1/rooms/{room}/actions", headers=AUTH,
                         json={"kind": kind, "body": body}) as r:
        assert r.status == 202, await r.text()
        seq: int = (await r.json())["seq"]
        return seq


async def publish_blob(http: aiohttp.ClientSession, srv: LiveServer, room: str,
                       i: int) -> tuple[str, int, int]:
    """Custom kind: ranks with comments (shed from budget/2)."""
    return "action", await _post_action(http, srv, room, "blob", {"data": BLOB, "i": i}), 8000


async def publish_blob_and_gifts(http: aiohttp.ClientSession, srv: LiveServer, room: str,
                                 i: int) -> tuple[str, int, int]:
    """A busy room: comment-class blobs and, in between, gifts (shed only at
    the budget itself)."""
    if i % 4 == 0:
        return "action", await _post_action(http, srv, room, "blob", {"data": BLOB}), 8000
    body = {"gift": "rose-" + "r" * 26, "count": 1 + i % 9999}
    return "action", await _post_action(http, srv, room, "gift", body), 40


async def publish_state(http: aiohttp.ClientSession, srv: LiveServer, room: str,
                        i: int) -> tuple[str, int, int]:
    """State changes are CONTROL: never shed."""
    async with http.post(f"{srv.url}/v1/rooms/{room}/state/board", headers=AUTH,
                         json={"value": {"data": BLOB, "t": time.time()}}) as r:
        assert r.status == 200, await r.text()
        partial: int = (await r.json())["partial"]
        return "state", partial, 8000


# --------------------------------------------------------------------------
@pytest.mark.parametrize("publish", [
    pytest.param(publish_blob, id="comment-class-actions"),
    pytest.param(publish_blob_and_gifts, id="actions-and-gifts"),
    pytest.param(publish_state, id="state-changes"),
])
async def test_slow_consumer_is_closed_and_others_are_not_slowed(
        make_server: Callable[..., LiveServer], http: aiohttp.ClientSession,
        publish: Publish) -> None:
    srv = make_server("--outbound-budget", str(BUDGET), "--slow-grace", "1",
                      "--action-rate", "1000", "--action-burst", "1000",
                      "--online-interval", "0.2")
    room = uid("flood")

    slow = await RawWs.connect(srv)
    try:
        await slow.send({"type": "hello", "token": srv.token(uid("slow")), "v": 1})
        await slow.expect("welcome")
        await slow.send({"type": "join", "room": room, "ref": 1})
        assert (await slow.expect("joined"))["members"] == 1
        # From here on the slow client never reads again (until the very end).

        fast = await LiveroomClient.connect(srv.ws_url, srv.token(uid("fast")), session=http)
        reader: FastReader | None = None
        try:
            joined = await fast.join(room)
            assert joined["type"] == "joined" and joined["members"] == 2, joined
            reader = FastReader(fast, room)
            await reader.wait_for("online count 2", lambda: 2 in reader.online, 5.0)

            # Flood the room until the server gives up on the slow client.
            published: list[int] = []
            ftype = ""
            sent_bytes = 0
            closes = 0.0
            t0 = time.monotonic()
            i = 0
            while time.monotonic() - t0 < FLOOD_SECONDS and sent_bytes < FLOOD_BYTES:
                ftype, n, size = await publish(http, srv, room, i)
                published.append(n)
                sent_bytes += size
                i += 1
                if i % 50 == 0:
                    closes = await metric(http, srv.url, "liveroom_closes_total", code="4100")
                    if closes >= 1:
                        break
            flood_s = time.monotonic() - t0
            dropped = await metric(http, srv.url, "liveroom_actions_dropped_total",
                                   reason="backpressure")
            assert closes >= 1, (
                f"the slow client was never closed: {len(published)} messages, "
                f"{sent_bytes / 1e6:.1f} MB in {flood_s:.1f}s, {dropped:.0f} deliveries "
                f"shed for backpressure")
            assert await metric(http, srv.url, "liveroom_closes_total", code="4100") == 1

            # The room carries on without it.
            for j in range(20):
                ftype, n, _ = await publish(http, srv, room, i + j)
                published.append(n)

            if ftype == "action":
                got = reader.seqs
                await reader.wait_for("every message", lambda: len(got) >= len(published), 10.0)
                assert got == published, "the fast client missed or reordered messages"
            else:
                # State is latest-wins within a coalescing tick: the fast client
                # may skip superseded versions, never reorder, and ends at the last.
                got = reader.partials
                await reader.wait_for("the last version",
                                      lambda: bool(got) and got[-1] >= published[-1], 10.0)
                assert got == sorted(set(got)), "versions went backwards or repeated"
                assert got[-1] == published[-1]
            assert published == list(range(1, len(published) + 1))
            worst = max(reader.latencies)
            assert worst < MAX_LATENCY, f"fast client latency up to {worst:.3f}s"

            # The slow one is out of the room: the online count drops back,
            # and a newcomer is counted with the fast client only.
            await reader.wait_for("online count back to 1",
                                  lambda: bool(reader.online) and reader.online[-1] == 1, 5.0)
            newcomer = await LiveroomClient.connect(srv.ws_url, srv.token(uid("new")),
                                                    session=http)
            try:
                assert (await newcomer.join(room))["members"] == 2
            finally:
                await newcomer.close()
        finally:
            if reader is not None:
                await reader.stop()
            await fast.close()

        # What the slow client finally reads ends with the slow-consumer close.
        async with asyncio.timeout(4.0):
            assert await slow.close_code() == 4100
    finally:
        slow.abort()
    assert srv.proc is not None and srv.proc.poll() is None
    async with http.get(f"{srv.url}/healthz") as r:
        assert r.status == 200
