"""The fan-out's send loop in C (edge/_sendloop.c) over real sockets, under
asyncio's loop and uvloop: it writes only what the transport would have
written, in the same order, and never to a socket that is not the member's.

Each test runs the hub against a real loopback TCP connection whose client
end is a bare socket that reads only when the test says so."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from edge.certs import make_dev_cert
from edge.fanout import Budget, Conn, Hub
from edge.ws import WsSink, socket_fd
from wire.codecs import JSON, Variant
from wire.frames import Priority

sendloop: Any
try:
    import edge._sendloop as sendloop
except ImportError:  # built without a C compiler (never in CI: below)
    sendloop = None

pytestmark = pytest.mark.timeout(60)
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
needs_c = pytest.mark.skipif(sendloop is None, reason="edge._sendloop was not built")


def test_the_send_loop_is_built_in_ci() -> None:
    """CI has a compiler (.ci/run): a build that lost the extension would
    quietly fall back to the Python loop, so CI refuses it."""
    if os.environ.get("CI") != "true":
        pytest.skip("only where CI=true")
    assert sendloop is not None


def run(loop: str, body: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(body())


class Frames:
    """An ``Outgoing`` whose frame is the same bytes for every variant."""

    def __init__(self, frame: bytes) -> None:
        self.frame = frame

    def frame_from(self, floor: Priority, variant: Variant) -> bytes | None:
        return self.frame


class Failing:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def frame_from(self, floor: Priority, variant: Variant) -> bytes | None:
        raise self.exc

    def __call__(self, variant: Variant) -> bytes | None:
        raise self.exc


class Server(asyncio.Protocol):
    def __init__(self, made: asyncio.Future[asyncio.Transport]) -> None:
        self.made = made
        self.received = bytearray()

    def connection_made(self, transport: Any) -> None:
        self.made.set_result(transport)

    def data_received(self, data: bytes) -> None:
        self.received += data


class Pair:
    """A server-side transport and the bare client socket of one connection."""

    def __init__(self, transport: asyncio.Transport, client: socket.socket,
                 protocol: Server, server: asyncio.Server) -> None:
        self.transport = transport
        self.client = client
        self.protocol = protocol
        self.server = server

    @classmethod
    async def open(cls, *, rcvbuf: int | None = None, sndbuf: int | None = None) -> Pair:
        loop = asyncio.get_running_loop()
        made: asyncio.Future[asyncio.Transport] = loop.create_future()
        protocol = Server(made)
        server = await loop.create_server(lambda: protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        client.setblocking(False)
        await loop.sock_connect(client, ("127.0.0.1", port))
        transport = await asyncio.wait_for(made, 5)
        if sndbuf:
            transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        return cls(transport, client, protocol, server)

    async def read_exactly(self, n: int) -> bytes:
        loop = asyncio.get_running_loop()
        out = bytearray()
        while len(out) < n:
            chunk = await asyncio.wait_for(loop.sock_recv(self.client, 1 << 16), 10)
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def pending(self) -> bytes:
        """What the client could read now without waiting."""
        try:
            return self.client.recv(1 << 16)
        except BlockingIOError:
            return b""

    async def close(self) -> None:
        self.client.close()
        self.transport.abort()
        self.server.close()
        await self.server.wait_closed()


def member(pair: Pair, cid: int = 1) -> Conn:
    conn = Conn(cid, WsSink(pair.transport, asyncio.get_running_loop()),
                Budget(bytes=1 << 30))
    conn.variant = JSON
    return conn


@pytest.mark.parametrize("loop", LOOPS)
def test_a_plain_tcp_transport_has_its_socket_and_tls_has_none(
        loop: str, tmp_path: Path) -> None:
    async def body() -> None:
        pair = await Pair.open()
        assert socket_fd(pair.transport) == pair.transport.get_extra_info("socket").fileno() >= 0
        await pair.close()

        cert = make_dev_cert(tmp_path, ["127.0.0.1"], dt.datetime.now(dt.UTC))
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert.cert, cert.key)
        client_ctx = ssl.create_default_context()
        client_ctx.check_hostname = False
        client_ctx.verify_mode = ssl.CERT_NONE
        ev = asyncio.get_running_loop()
        made: asyncio.Future[asyncio.Transport] = ev.create_future()
        server = await ev.create_server(lambda: Server(made), "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        tls = await asyncio.wait_for(made, 5)
        # A send to the socket would bypass the encryption: never.
        assert socket_fd(tls) == -1
        assert Conn(1, WsSink(tls, ev), Budget()).fd == -1
        writer.close()
        tls.abort()
        server.close()
        await server.wait_closed()

    run(loop, body)


@needs_c
@pytest.mark.parametrize("loop", LOOPS)
def test_a_member_who_keeps_up_is_sent_to_and_one_who_does_not_is_handed_back(
        loop: str) -> None:
    async def body() -> None:
        pair = await Pair.open()
        conn = member(pair)
        conn.last_buffered = 99
        sent, rest, failed, error = sendloop.write_members([conn], lambda v: b"hello")
        assert (sent, rest, failed, error) == (1, [], [], None)
        assert conn.last_buffered == 0
        assert await pair.read_exactly(5) == b"hello"
        # Anything the transport holds unsent: the Python loop's, untouched.
        pair.transport.pause_reading()
        conn.over_since = 1.0
        assert sendloop.write_members([conn], lambda v: b"x") == (0, [conn], [], None)
        conn.over_since = None
        conn.closed = True
        assert sendloop.write_members([conn], lambda v: b"x") == (0, [conn], [], None)
        conn.closed = False
        no_socket = Conn(2, WsSink(pair.transport, asyncio.get_running_loop()), Budget())
        no_socket.fd = -1
        assert sendloop.write_members([no_socket], lambda v: b"x") == (0, [no_socket], [], None)
        # A variant that sheds (None): handed back for the Python loop to count.
        assert sendloop.write_members([conn], lambda v: None) == (0, [conn], [], None)
        assert pair.pending() == b""
        await pair.close()

    run(loop, body)


@needs_c
@pytest.mark.parametrize("loop", LOOPS)
def test_an_encoder_error_stops_the_loop_and_an_interrupt_propagates(loop: str) -> None:
    async def body() -> None:
        pair = await Pair.open()
        conn = member(pair)
        boom = ValueError("cannot encode")
        sent, rest, failed, error = sendloop.write_members([conn], Failing(boom))
        assert (sent, rest, failed, error) == (0, [], [], boom)
        with pytest.raises(KeyboardInterrupt):
            sendloop.write_members([conn], Failing(KeyboardInterrupt()))
        # Through the hub: reported as the room's error, nothing written.
        hub = Hub()
        hub.join(conn, "r")
        result = hub.broadcast("r", Failing(ValueError("x")), 0.0)  # type: ignore[arg-type]
        assert [e.reason for e in result.errors] == ["encode"] and result.sent == 0
        assert pair.pending() == b""
        await pair.close()

    run(loop, body)


@pytest.mark.parametrize("c_send_loop", [True, False], ids=["c", "python"])
@pytest.mark.parametrize("loop", LOOPS)
def test_frames_arrive_whole_and_in_order_through_partial_sends(
        loop: str, c_send_loop: bool) -> None:
    """A client that stops reading: sends go short, the transport queues the
    rest, later frames queue behind it; when the client reads again it gets
    every frame whole and in order. Then, drained, the loop sends directly again."""
    async def body() -> None:
        pair = await Pair.open(rcvbuf=4096, sndbuf=4096)
        conn = member(pair)
        hub = Hub(c_send_loop=c_send_loop)
        hub.join(conn, "r")
        frames = [(b"%05d:" % i) + bytes([65 + i % 26]) * 2994 for i in range(400)]
        for frame in frames[:200]:
            result = hub.broadcast("r", Frames(frame), 0.0)  # type: ignore[arg-type]
            assert result.sent == 1 and not result.failed and not result.closed
        assert pair.transport.get_write_buffer_size() > 0  # the short sends happened
        got = await pair.read_exactly(3000 * 200)
        assert got == b"".join(frames[:200])
        await wait_for(lambda: pair.transport.get_write_buffer_size() == 0)
        got = b""
        for frame in frames[200:]:
            # Read as it goes: these go out by send(2) again.
            hub.broadcast("r", Frames(frame), 0.0)  # type: ignore[arg-type]
            got += await pair.read_exactly(3000)
        assert got == b"".join(frames[200:])
        await pair.close()

    run(loop, body)


@needs_c
@pytest.mark.parametrize("loop", LOOPS)
def test_a_closed_members_socket_number_reused_by_another_socket_gets_nothing(
        loop: str) -> None:
    """A member whose transport closed keeps its ``fd`` number, which the
    kernel hands to the next socket opened: the loop must ask the transport
    (``is_closing``), never trust the number."""
    async def body() -> None:
        first = await Pair.open()
        stale = member(first)
        old_fd = stale.fd
        first.transport.close()
        await wait_for(lambda: _closed(first.client))
        # Take free numbers, lowest first, until the stale one is in use again.
        pairs: list[tuple[socket.socket, socket.socket]] = []
        while not any(a.fileno() == old_fd for a, _ in pairs):
            assert len(pairs) < 256, f"fd {old_fd} never reused"
            pairs.append(socket.socketpair())
        _intruder, peer = next(p for p in pairs if p[0].fileno() == old_fd)
        peer.setblocking(False)
        second = await Pair.open()
        fresh = member(second, cid=2)
        hub = Hub(c_send_loop=True)
        hub.join(stale, "r")
        hub.join(fresh, "r")
        result = hub.broadcast("r", Frames(b"for-the-room"), 0.0)  # type: ignore[arg-type]
        assert not result.failed
        assert await second.read_exactly(12) == b"for-the-room"
        with pytest.raises(BlockingIOError):
            peer.recv(100)  # nothing reached the socket that took the number
        for a, b in pairs:
            a.close()
            b.close()
        first.client.close()
        first.server.close()
        await second.close()

    run(loop, body)


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.01)


class Member:
    """Not a ``Conn``: the loop reads it by name (PyObject_GetAttr), not by slot."""

    def __init__(self, conn: Conn) -> None:
        self.fd = conn.fd
        self.closed = False
        self.over_since = None
        self.stream = conn.stream
        self.variant = conn.variant
        self.last_buffered = 7


class SubConn(Conn):
    __slots__ = ("extra",)


@needs_c
@pytest.mark.parametrize("loop", LOOPS)
def test_other_member_classes_are_read_by_name_in_any_order(loop: str) -> None:
    async def body() -> None:
        pairs = [await Pair.open() for _ in range(3)]
        plain = member(pairs[0])
        duck = Member(member(pairs[1], cid=2))
        sub = SubConn(3, WsSink(pairs[2].transport, asyncio.get_running_loop()), Budget())
        sub.variant = JSON
        sub.closed = True  # read through the subclass's slots: not sent
        sent, rest, failed, error = sendloop.write_members(
            [plain, duck, sub, plain], lambda v: b"abc")
        assert (sent, rest, failed, error) == (3, [sub], [], None)
        assert duck.last_buffered == 0 and plain.last_buffered == 0
        assert await pairs[0].read_exactly(6) == b"abcabc"
        assert await pairs[1].read_exactly(3) == b"abc"
        assert pairs[2].pending() == b""
        del duck.over_since  # a member missing an attribute: handed back
        assert sendloop.write_members([duck], lambda v: b"x") == (0, [duck], [], None)
        for pair in pairs:
            await pair.close()

    run(loop, body)
