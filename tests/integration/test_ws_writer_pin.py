"""Pins the one place that bypasses aiohttp's WebSocket writer (edge/ws.py).

The fan-out writes pre-built frames straight to the request's transport. That
is only right while (1) ``request.transport`` is the transport aiohttp's
WebSocket writer writes to, (2) the writer writes whole frames synchronously
with no buffering of its own, and (3) no compression is negotiated. If an
aiohttp upgrade changes any of this, this test fails before users see
interleaved or corrupt frames.
"""

from __future__ import annotations

import asyncio
import inspect

import aiohttp
from aiohttp import web
from aiohttp._websocket import writer as ws_writer

from edge.ws import WsSink
from wire.websocket import OP_BINARY, ws_frame

TESTED_AIOHTTP = (3, 10)


def test_aiohttp_version_is_one_we_checked() -> None:
    major, minor = (int(x) for x in aiohttp.__version__.split(".")[:2])
    assert major == 3 and (major, minor) >= TESTED_AIOHTTP, aiohttp.__version__


def test_writer_writes_frames_straight_to_its_transport() -> None:
    src = inspect.getsource(ws_writer.WebSocketWriter._write_websocket_frame)
    assert "self.transport.write(" in src


async def test_prebuilt_frames_interleave_safely_with_aiohttp_frames() -> None:
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        seen["same_transport"] = request.transport is ws._writer.transport  # type: ignore[union-attr]
        seen["compress"] = ws.compress
        assert request.transport is not None
        sink = WsSink(request.transport, asyncio.get_running_loop())
        sink.write(ws_frame(b"pre-1", OP_BINARY))
        await ws.send_bytes(b"aiohttp-2")
        sink.write(ws_frame(b"pre-3", OP_BINARY))
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as s, s.ws_connect(
                f"ws://127.0.0.1:{port}/ws", compress=15) as ws:
            got = [(await ws.receive(timeout=5)).data for _ in range(3)]
    finally:
        await runner.cleanup()
    assert got == [b"pre-1", b"aiohttp-2", b"pre-3"]
    assert seen == {"same_transport": True, "compress": False}


def test_edge_site_copies_tcpsite_start_but_for_the_protocol_factory() -> None:
    """``edge.http_site.TimedSite.start`` (and so ``EdgeSite``) re-does
    ``TCPSite.start`` with its own protocol factory, reading TCPSite's private
    attributes: if aiohttp's start changes shape, look again before upgrading."""
    src = inspect.getsource(web.TCPSite.start)
    for piece in ("await super().start()", "self._runner.server", "self._host", "self._port",
                  "ssl=self._ssl_context", "backlog=self._backlog",
                  "reuse_address=self._reuse_address", "reuse_port=self._reuse_port",
                  "self._bound_port ="):
        assert piece in src, piece
    assert "_bound_port" in web.TCPSite.__slots__


def test_the_unmasking_helper_is_aiohttps_compiled_one() -> None:
    from aiohttp._websocket.helpers import websocket_mask

    data = bytearray(b"\x00\x01\x02\x03\x04")
    websocket_mask(b"\x01\x01\x01\x01", data)
    assert data == bytearray(b"\x01\x00\x03\x02\x05")
    assert "cython" in websocket_mask.__name__


def test_the_timed_request_handler_reads_what_aiohttp_keeps() -> None:
    """``edge.http_site.TimedRequestHandler`` builds its handler as
    ``Server.__call__`` does and watches ``RequestHandler``'s privates: a
    head is complete when ``_request_count`` moves, its payload is the last
    of ``_messages``; ``_upgraded``/``_payload_parser`` mean a WebSocket."""
    from aiohttp.web_protocol import RequestHandler
    from aiohttp.web_server import Server

    assert "RequestHandler(self, loop=self._loop, **self._kwargs)" in \
        inspect.getsource(Server.__call__)
    src = inspect.getsource(RequestHandler.data_received)
    for piece in ("self._request_count += 1", "self._messages.append((msg, payload))",
                  "self._upgraded = upgraded", "self._payload_parser is None"):
        assert piece in src, piece
    assert "keepalive_timeout" in inspect.signature(RequestHandler.__init__).parameters
    for slot in ("_request_count", "_messages", "_payload_parser"):
        assert slot in RequestHandler.__slots__, slot
