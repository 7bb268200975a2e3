"""The aiohttp WebSocket adapter: ``GET /ws`` for an upgrade that arrives
on a keep-alive connection aiohttp already serves (a fresh connection's
upgrade is served by ``edge/ws_conn.py``, without aiohttp's per-connection
objects), and the answer to a bad upgrade (aiohttp's 400, as our error body).

aiohttp does the handshake, reads and unmasks client frames, answers pings and
keeps the heartbeat (``call_at`` timers, no task per connection). Server
frames take a shorter road: they are pre-built once per message
(``wire.websocket.ws_frame``) and written straight to the connection's
transport by ``WsSink.write`` below, the one place that bypasses aiohttp's
``WebSocketWriter``. Why: ``send_bytes`` is a coroutine that frames the
payload again for every recipient and may await a slow client; the fan-out
loop must do neither. Safe because we never enable permessage-deflate
(``compress=False``: a compressed stream would need per-connection framing),
and every write is one whole frame, so ours never interleave with aiohttp's
control frames. ``tests/integration/test_ws_writer_pin.py`` pins this to the
aiohttp version.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import logging
import socket

from aiohttp import WSMsgType, web

from edge.appkeys import NODE_KEY
from edge.connection import DETACHED, Connection
from edge.node import EdgeNode
from wire.codecs import JSON, MSGPACK
from wire.websocket import ws_close_frame

log = logging.getLogger("liveroom.ws")

# A closed connection whose peer does not read gets this long to take the
# close frame before the socket is aborted.
_CLOSE_LINGER_S = 5.0


def _plain_tcp_transports() -> tuple[type, ...]:
    """The transport classes that write a frame to their socket as it is:
    asyncio's and uvloop's plain TCP transports (a TLS connection's
    transport is another class)."""
    found: list[type] = []
    selector = getattr(asyncio.selector_events, "_SelectorSocketTransport", None)
    if isinstance(selector, type):
        found.append(selector)
    try:
        import uvloop.loop
    except ImportError:
        pass
    else:
        tcp = getattr(uvloop.loop, "TCPTransport", None)
        if isinstance(tcp, type):
            found.append(tcp)
    return tuple(found)


_PLAIN_TCP = _plain_tcp_transports()


def socket_fd(transport: asyncio.BaseTransport) -> int:
    """The socket of ``transport`` for the send loop in C (edge/_sendloop.c),
    or -1 when a send to it would not be what ``transport.write`` sends: any
    transport but a plain TCP one (TLS above all), or no socket."""
    if type(transport) not in _PLAIN_TCP or transport.get_extra_info("sslcontext") is not None:
        return -1
    sock = transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM:
        return -1
    fd = sock.fileno()
    return fd if isinstance(fd, int) else -1


class WsSink:
    __slots__ = ("_loop", "fd", "stream", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        # The hub's fast path writes pre-framed bytes to it directly
        # (edge.fanout.Stream): ``write`` below is exactly that.
        self.stream = transport
        # The send loop in C sends them to its socket (-1: it may not).
        self.fd = socket_fd(transport)
        self._loop = loop

    def write(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    def close(self, code: int, reason: str) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(ws_close_frame(code, reason))
        # close() flushes what is buffered first; a peer that reads nothing
        # would keep it open forever, hence the abort after a linger.
        transport.close()
        self._loop.call_later(_CLOSE_LINGER_S, transport.abort)


async def handle_ws(request: web.Request) -> web.StreamResponse:
    node: EdgeNode = request.app[NODE_KEY]
    cfg = node.config
    ws = web.WebSocketResponse(
        heartbeat=cfg.heartbeat,
        max_msg_size=cfg.max_frame_bytes * cfg.hard_frame_factor,
        compress=False,
    )
    await ws.prepare(request)
    node.metrics.ws_upgrades.labels("aiohttp").inc()
    transport = request.transport
    if transport is None:
        return ws
    loop = asyncio.get_running_loop()
    # aiohttp reads in this handler's task (and pauses its own reading):
    # each message goes to the node before the next is read.
    core = Connection(node, WsSink(transport, loop), DETACHED, loop)
    try:
        async for msg in ws:
            if core.conn.closed:
                # Closed by us (slow, auth, expiry): read until the transport
                # is gone, but act on nothing more.
                continue
            if msg.type is WSMsgType.BINARY:
                await core.hand(msg.data, MSGPACK)
            elif msg.type is WSMsgType.TEXT:
                await core.hand(msg.data, JSON)
            else:
                break
    except Exception:  # the transport broke under us: same as a disconnect
        log.debug("connection %d ended with an error", core.conn.cid, exc_info=True)
    finally:
        await core.end()
    return ws
