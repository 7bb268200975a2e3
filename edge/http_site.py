"""Every HTTP connection of every role, timed: the head, the body and the
idle keep-alive (``edge.config.HttpTimeouts``; docs/PROTOCOL.md, Limits).

Theory of operation
-------------------
aiohttp reads requests with no time limit: a client that sends a head a byte
a second, or a complete head and then a body that never comes, holds a file
descriptor and a request handler for as long as it likes (its keep-alive
timeout, 3,630 s by default, only fires while the handler waits for a *new*
request, and is reset by nothing the client sends). ``TimedRequestHandler``
is aiohttp's ``RequestHandler`` with two timers around its
``data_received``:

- **head**: started by the first byte of a request head (the first request
  of a connection, or any later one on a keep-alive connection; for the
  first, ``begin_head`` backdates it to the accept), cancelled when aiohttp's
  parser has the whole head (its request count moves);
- **body**: started when a head with a body is complete, cancelled when the
  parser has fed the end of that body (the payload is at EOF), whether or
  not the handler has read it yet.

Either expiring closes the connection without an answer (nothing can be said
in the middle of a request). The idle keep-alive is aiohttp's own
``keepalive_timeout``, set here from the same configuration. A connection
upgraded to a WebSocket (aiohttp's ``WebSocketResponse``) leaves both timers:
its heartbeat governs it from then on.

``TimedSite`` is aiohttp's ``TCPSite`` whose connections get this handler
(the router, CDN and agents roles); ``edge.ws_conn.EdgeSite`` puts its front
door first and hands it this same handler. Both reach into aiohttp's
privates (``Server._kwargs``, ``RequestHandler._request_count``,
``_messages``, ``_upgraded``, ``_payload_parser``, ``TCPSite``'s fields):
``tests/integration/test_ws_writer_pin.py`` pins them to the aiohttp
version, and ``tests/integration/test_http_timeouts.py`` pins the behaviour.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from edge.config import HttpTimeouts
from edge.metrics import Metrics

log = logging.getLogger("liveroom.http")


# Told the phase ("head" or "body") of each connection closed for a timeout.
TimeoutCounter = Callable[[str], None]


class TimedRequestHandler(RequestHandler):
    __slots__ = ("_body", "_body_timer", "_count", "_head_timer", "_timeouts")

    def __init__(self, manager: Server, timeouts: HttpTimeouts,
                 count: TimeoutCounter | None = None, **kwargs: Any) -> None:
        super().__init__(manager, **{**kwargs, "keepalive_timeout": timeouts.idle})
        self._timeouts = timeouts
        self._count = count
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        # The payload of the last request whose body is not all in yet.
        self._body: StreamReader | None = None

    def begin_head(self, deadline: float) -> None:
        """The head under way must be complete by ``deadline`` (loop time):
        the front door has been reading it since the accept."""
        if self._head_timer is None:
            self._head_timer = self._loop.call_at(deadline, self._expired, "head")

    def data_received(self, data: bytes) -> None:
        if self._upgraded or self._payload_parser is not None:
            super().data_received(data)  # a WebSocket now: the heartbeat's
            return
        if data and self._head_timer is None and self._body is None:
            # Not in a body, so these bytes begin a head (or a pipelined one).
            self._head_timer = self._loop.call_later(self._timeouts.head, self._expired,
                                                     "head")
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:
            # One head or more complete (the parser queued their messages,
            # which the handler's task has not taken yet: it runs later).
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            if self._messages:
                payload = self._messages[-1][1]
                if not payload.is_eof():
                    # A body under way (an earlier one, pipelined, is done).
                    if self._body_timer is not None:
                        self._body_timer.cancel()
                    self._body = payload
                    self._body_timer = self._loop.call_later(self._timeouts.body,
                                                             self._expired, "body")
        if self._body is not None and self._body.is_eof():
            self._body = None
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

    def _expired(self, phase: str) -> None:
        if phase == "head":
            self._head_timer = None
        else:
            self._body_timer = None
        log.debug("HTTP connection closed: request %s not complete in time", phase)
        if self._count is not None:
            self._count(phase)
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self._body = None
        super().connection_lost(exc)


def handler_factory(server: Server, timeouts: HttpTimeouts,
                    count: TimeoutCounter | None = None) -> Callable[[], TimedRequestHandler]:
    """What ``server()`` does (aiohttp's ``Server.__call__``), with our handler."""
    loop = asyncio.get_running_loop()
    kwargs = dict(server._kwargs)
    return lambda: TimedRequestHandler(server, timeouts, count, loop=loop, **kwargs)


def counter_of(metrics: Metrics) -> TimeoutCounter:
    """Timeouts counted in ``liveroom_http_timeouts_total``."""
    return lambda phase: metrics.http_timeouts.labels(phase).inc()


class TimedSite(web.TCPSite):
    """aiohttp's ``TCPSite`` whose connections are timed (``TimedRequestHandler``);
    ``count``, when given, is told of each connection closed for a timeout."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 timeouts: HttpTimeouts, count: TimeoutCounter | None = None,
                 **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.timeouts = timeouts
        self.count = count

    def protocol_factory(self, http: Server) -> Callable[[], asyncio.Protocol]:
        """The protocol of each accepted connection."""
        return handler_factory(http, self.timeouts, self.count)

    async def start(self) -> None:
        # TCPSite.start with one change: the protocol factory. Pinned to the
        # aiohttp version by tests/integration/test_ws_writer_pin.py.
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        http = self._runner.server
        assert http is not None
        self._server = await loop.create_server(
            self.protocol_factory(http), self._host, self._port,
            ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        else:
            self._bound_port = self._port
