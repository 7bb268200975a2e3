"""The edge's own WebSocket connections: one small ``asyncio.Protocol`` per
client, with no per-connection objects of aiohttp.

Why: an idle viewer costs what its connection keeps alive. Under aiohttp a
WebSocket keeps the request handler, the parsed request and its headers,
the ``WebSocketResponse`` with its reader, writer and queue, and the
handler's task and coroutine frames: about 13 KB of Python objects per
connection (tracemalloc; docs/BENCHMARKS.md). Here a connection is this
protocol object (slots), the frame parser (an empty ``bytes`` when idle),
and its ``Connection`` (``edge/connection.py``, the core every transport
shares: the node's ``Conn`` and ``Session`` and two timers); frames the
client sends are handed to the node by a task that exists only while there
are frames to hand over.

How a connection gets here: ``EdgeSite`` (``edge.http_site.TimedSite`` with
a front door) gives every new TCP connection a ``FrontDoor`` first. If the
first request is a valid WebSocket upgrade of ``GET /ws``
(``ws_framing.upgrade_key``), the front door answers ``101`` itself and
hands the transport to a ``WsConnection``; anything else (every other URL,
a bad upgrade) is handed, with the bytes read so far, to the timed aiohttp
request handler (``edge.http_site``), exactly as if aiohttp had accepted the
connection; the head timeout started at the accept goes on running there. An upgrade that
arrives later on a keep-alive connection aiohttp already serves (a client
reusing a pooled HTTP connection) is served by aiohttp's
``WebSocketResponse`` in ``edge/ws.py``: the same node, sink and timers, a
larger connection.

Behaviour, the same on both paths (docs/PROTOCOL.md): server frames are
pre-built and written by ``WsSink``; client pings are answered with pongs
(here: the latest ping of each packet, and none while the client leaves more
than its outbound budget unread);
after ``heartbeat`` seconds without a byte from the client a ping goes out,
and a connection that sends nothing for half that again is dropped without a
close frame (the client sees 1006); a frame header announcing a message over
``hard_frame_factor`` times ``max_frame_bytes`` closes with 1009 (so does a
message in more than ``max_fragments`` frames), a protocol violation with
1002, invalid UTF-8 in a text message with 1007; a client's close frame is
answered with a close frame and the connection ends. Frames waiting for the
node are bounded in number and in bytes (``max_inbound_bytes``): past either,
the socket is not read until the node catches up (``Connection.feed``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_server import Server

from edge.appkeys import NODE_KEY
from edge.connection import Connection
from edge.http_site import TimedRequestHandler, TimedSite, counter_of, handler_factory
from edge.node import EdgeNode
from edge.ws import WsSink
from edge.ws_framing import (
    CLOSE_INVALID_DATA,
    MAX_HEAD,
    OP_BINARY,
    OP_CLOSE,
    OP_PONG,
    OP_TEXT,
    ClientFrames,
    WsProtocolError,
    handshake_response,
    upgrade_key,
)
from wire.codecs import JSON, MSGPACK
from wire.websocket import OP_PING, ws_frame

log = logging.getLogger("liveroom.ws")

WS_PATH = "/ws"
_WS_REQUEST = b"GET " + WS_PATH.encode()  # how a request the front door may take begins
_PING = ws_frame(b"", OP_PING)


class WsServer:
    """What the connections of one listening socket share: the node and the
    loop."""

    __slots__ = ("loop", "node")

    def __init__(self, node: EdgeNode, loop: asyncio.AbstractEventLoop) -> None:
        self.node = node
        self.loop = loop


class WsConnection(asyncio.Protocol):
    """The WebSocket framing, pongs and heartbeat of one connection, around
    its ``Connection`` (edge/connection.py: the node's connection, the
    frames waiting for the node, the hello and expiry timers). Frames that
    ``Connection.feed`` says are too many pause reading the socket; it calls
    ``resume_reading`` when they are down again."""

    __slots__ = ("_frames", "_heartbeat", "_last_rx", "_ping_at", "_server", "core",
                 "transport")

    def __init__(self, server: WsServer) -> None:
        self._server = server
        cfg = server.node.config
        self._frames = ClientFrames(cfg.max_frame_bytes * cfg.hard_frame_factor,
                                    cfg.max_fragments)
        self._ping_at: float | None = None

    # -- asyncio.Protocol ------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        server = self._server
        loop = server.loop
        self.transport: asyncio.Transport = transport
        self.core = Connection(server.node, WsSink(transport, loop), self, loop)
        self._last_rx = loop.time()
        self._heartbeat = loop.call_at(self._last_rx + server.node.config.heartbeat,
                                       self._on_heartbeat)

    def data_received(self, data: bytes) -> None:
        self._last_rx = self._server.loop.time()
        core = self.core
        if core.conn.closed:
            # Closed by us (slow, auth, expiry, a protocol error): read until
            # the transport is gone, but act on nothing more.
            return
        try:
            frames = self._frames.feed(data)
        except WsProtocolError as err:
            self._server.node.close_connection(core.conn, err.code, err.reason)
            return
        ping: bytes | None = None
        pause = False
        for op, payload in frames:
            if op == OP_BINARY:
                pause |= core.feed(payload, MSGPACK, len(payload))
            elif op == OP_TEXT:
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    self._server.node.close_connection(core.conn, CLOSE_INVALID_DATA,
                                                       "invalid UTF-8 in a text message")
                    break
                pause |= core.feed(text, JSON, len(payload))
            elif op == OP_PING:
                ping = payload
            elif op == OP_CLOSE:
                self._closed_by_client(payload)
                break
            # OP_PONG: any byte received already counts for the heartbeat.
        else:
            if ping is not None:
                self._pong(ping)
        if pause:
            self.transport.pause_reading()

    def _pong(self, payload: bytes) -> None:
        """Answer the latest ping of a packet only (RFC 6455 5.5.3 allows it),
        and none while the client leaves our writes unread past its outbound
        budget: a ping flood from a client that does not read must not grow
        the write buffer (the pongs would be the one thing written to it)."""
        if self.transport.get_write_buffer_size() <= self._server.node.config.budget.bytes:
            self.transport.write(ws_frame(payload, OP_PONG))

    def connection_lost(self, exc: Exception | None) -> None:
        self._heartbeat.cancel()
        self.core.lost()

    # -- ConnectionIO -----------------------------------------------------
    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def finished(self) -> None:
        pass

    # -- control ----------------------------------------------------------
    def _closed_by_client(self, payload: bytes) -> None:
        """Answer a client's close with its code (RFC 6455 5.5.1) and end."""
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
        if not 1000 <= code <= 4999 or code in (1004, 1005, 1006, 1015):
            code = 1002
        self.core.conn.close(code, "")

    def _on_heartbeat(self) -> None:
        """A ping after ``heartbeat`` s of silence; no byte in the half
        period after it drops the connection (no close frame: 1006)."""
        loop = self._server.loop
        now = loop.time()
        period = self._server.node.config.heartbeat
        if self._ping_at is not None:
            if self._last_rx <= self._ping_at:
                log.debug("connection %d: no pong in time, dropped", self.core.conn.cid)
                self.transport.abort()
                return
            self._ping_at = None
        due = self._last_rx + period
        if now < due:
            self._heartbeat = loop.call_at(due, self._on_heartbeat)
            return
        if not self.transport.is_closing():
            self.transport.write(_PING)
        self._ping_at = now
        self._heartbeat = loop.call_at(now + period / 2, self._on_heartbeat)


class FrontDoor(asyncio.Protocol):
    """The first protocol of every TCP connection of an ``EdgeSite``: reads
    the first request head; a WebSocket upgrade of ``/ws`` becomes a
    ``WsConnection``, anything else goes to aiohttp. A connection that has
    not sent its first request head within the HTTP head timeout is closed
    (an idle socket must not hold a file descriptor forever); a head handed
    to aiohttp unfinished keeps that deadline."""

    __slots__ = ("_buf", "_http", "_server", "_timer", "_transport")

    def __init__(self, http: Callable[[], TimedRequestHandler], server: WsServer) -> None:
        self._http = http
        self._server = server
        self._buf = b""

    def connection_made(self, transport: Any) -> None:
        self._transport: asyncio.Transport = transport
        self._timer: asyncio.TimerHandle | None = self._server.loop.call_later(
            self._server.node.config.http.head, self._too_slow)

    def _too_slow(self) -> None:
        self._timer = None
        log.debug("connection closed: no request head in time")
        self._transport.close()

    def _leave(self) -> None:
        """The connection goes to its real protocol: no more timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        if not (buf.startswith(_WS_REQUEST) or _WS_REQUEST.startswith(buf)):
            self._to_http(buf)
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._to_http(buf)
            else:
                self._buf = buf
            return
        key = upgrade_key(buf[:end], WS_PATH)
        if key is None:
            self._to_http(buf)
            return
        self._leave()
        transport = self._transport
        transport.write(handshake_response(key))
        self._server.node.metrics.ws_upgrades.labels("own").inc()
        ws = WsConnection(self._server)
        transport.set_protocol(ws)
        ws.connection_made(transport)
        rest = buf[end + 4:]
        if rest:
            ws.data_received(rest)

    def _to_http(self, buf: bytes) -> None:
        deadline = self._timer.when() if self._timer is not None else None
        self._leave()
        handler = self._http()
        transport = self._transport
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if deadline is not None:
            handler.begin_head(deadline)
        handler.data_received(buf)

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave()
        self._buf = b""


class EdgeSite(TimedSite):
    """A ``TimedSite`` whose connections meet a ``FrontDoor`` first (the
    edge's WebSocket path without aiohttp's per-connection objects), with the
    node's HTTP timeouts. Only for an app with an edge node (``NODE_KEY``)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, **kwargs: Any) -> None:
        self._node: EdgeNode = runner.app[NODE_KEY]
        super().__init__(runner, host, port, timeouts=self._node.config.http,
                         count=counter_of(self._node.metrics), **kwargs)

    def protocol_factory(self, http: Server) -> Callable[[], asyncio.Protocol]:
        server = WsServer(self._node, asyncio.get_running_loop())
        handler = handler_factory(http, self.timeouts, self.count)
        return lambda: FrontDoor(handler, server)
