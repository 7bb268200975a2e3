"""One client connection, whatever its transport: the core every adapter
wraps.

Theory of operation
-------------------
A transport adapter (``edge/ws_conn.py``: the edge's own WebSocket protocol;
``edge/ws.py``: aiohttp's WebSocket; ``edge/quic.py``: a WebTransport
session; ``llm_agents/link.py``: an agent in this process) parses its
framing, writes through its ``Sink``, and hands everything else to a
``Connection``:

- ``Connection(node, sink, io, loop)`` opens the node's ``Conn`` (the hub's
  view: rooms, variant, outbound budget) and ``Session`` (the state machine)
  for the sink, and starts the hello timer;
- ``feed(data, variant, size)`` queues one complete client message for the
  node. One task, which exists only while messages wait, hands them over in
  order; ``feed`` says whether the transport should stop reading (past
  ``PAUSE`` messages or ``max_inbound_bytes`` bytes waiting); the core calls
  ``io.resume_reading()`` once they are down to ``RESUME`` messages and a
  quarter of the bytes (the bound is soft by at most the messages of one
  read). A transport that cannot pause reads ``queued`` and
  ``queued_bytes`` and closes instead (QUIC: 4100);
- ``hand(data, variant)`` hands one message over at once, in the caller's
  task, for an adapter that reads in a task of its own (aiohttp's handler,
  the agent link);
- ``lost()``: the transport went away. The messages already queued still
  reach the node, then the node forgets the connection and the adapter
  hears ``io.finished()``. ``end()`` is the same, awaited, for an adapter
  without a queue.

Timers (loop timers, not a task per connection):

- **hello timeout**: a connection that has not authenticated within
  ``hello_timeout`` seconds is closed with HELLO_TIMEOUT (4102);
- **token expiry**: once authenticated, the connection is closed with
  TOKEN_EXPIRED (4200: get a new token, reconnect) when its token expires,
  by the node's clock (``EdgeNode.clock``, the clock the token was checked
  against).

An agent's link is ``timed=False``: trusted server-side code, it says hello
when it first joins and its token is not cut off.

What is not here: the heartbeat (a WebSocket ping, aiohttp's, a QUIC PING:
each transport keeps its own) and the hot write path (``Sink.write``,
``Conn.deliver``, the hub). The object has slots and replaces, in each
adapter, the fields it owns: an idle connection costs no more than before.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from edge.fanout import Conn, Sink
from edge.node import EdgeNode
from edge.session import Phase, Session
from wire.close_codes import CloseCode
from wire.codecs import Variant

# Client messages waiting for the node beyond this many, or beyond
# ``max_inbound_bytes``: ``feed`` says pause reading, until they are down to
# RESUME messages and a quarter of the bytes (TCP then pushes back on the
# client).
PAUSE = 64
RESUME = 8

# The tasks that end connections, kept until done (the loop keeps only a
# weak reference to a task).
_closing: set[asyncio.Task[None]] = set()


class ConnectionIO(Protocol):
    """What the core asks of its adapter."""

    def resume_reading(self) -> None:
        """The messages waiting are down again: read the transport."""

    def finished(self) -> None:
        """The node has forgotten the connection (after ``lost``)."""


class Detached:
    """The ``ConnectionIO`` of an adapter that neither pauses nor needs to
    hear the end (it calls ``hand`` and ``end`` in its own task)."""

    __slots__ = ()

    def resume_reading(self) -> None:
        pass

    def finished(self) -> None:
        pass


DETACHED = Detached()


class _Off:
    """An expiry timer never to be armed: an untimed connection's, or one
    whose timers were cancelled."""

    __slots__ = ()

    def cancel(self) -> None:
        pass


_OFF = _Off()


class Connection:
    __slots__ = ("_expiry", "_hello", "_inbox", "_io", "_loop", "_lost", "_paused", "_task",
                 "conn", "node", "queued_bytes", "session")

    def __init__(self, node: EdgeNode, sink: Sink, io: ConnectionIO,
                 loop: asyncio.AbstractEventLoop | None, *, timed: bool = True) -> None:
        """``loop`` None: the running loop, when one is needed (a link made
        before the loop runs)."""
        self.node = node
        self._io = io
        self._loop = loop
        self.conn: Conn
        self.session: Session
        self.conn, self.session = node.open(sink)
        # Messages for the node: (data, variant, size on the wire); None
        # while there are none (an idle connection keeps no deque).
        self._inbox: deque[tuple[bytes | str, Variant, int]] | None = None
        self.queued_bytes = 0  # the sizes of the messages in _inbox
        self._task: asyncio.Task[None] | None = None
        self._lost = False
        self._paused = False
        self._hello: asyncio.TimerHandle | None = None
        # None: not armed yet (armed once the session is authenticated).
        self._expiry: asyncio.TimerHandle | _Off | None = None
        if timed:
            self._hello = self._the_loop().call_later(node.config.hello_timeout,
                                                      self._hello_timeout)
        else:
            self._expiry = _OFF

    # -- messages in ---------------------------------------------------------
    def feed(self, data: bytes | str, variant: Variant, size: int) -> bool:
        """One complete client message (``size`` bytes on the wire), queued
        for the node. True when the transport should stop reading."""
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append((data, variant, size))
        self.queued_bytes += size
        if self._task is None:
            self._task = self._the_loop().create_task(self._drain())
        if not self._paused and (len(inbox) >= PAUSE
                                 or self.queued_bytes >= self.node.config.max_inbound_bytes):
            self._paused = True
            return True
        return False

    @property
    def queued(self) -> int:
        """Messages waiting for the node (not counting one being handled)."""
        return 0 if self._inbox is None else len(self._inbox)

    async def hand(self, data: bytes | str, variant: Variant) -> None:
        """One client message to the node now. A connection closed by us
        (slow, auth, expiry, a protocol error) acts on nothing more."""
        if not self.conn.closed:
            await self.node.receive(self.conn, self.session, data, variant)
            self._after_frame()

    async def _drain(self) -> None:
        low_bytes = self.node.config.max_inbound_bytes // 4
        inbox = self._inbox
        assert inbox is not None
        try:
            while inbox:
                data, variant, size = inbox.popleft()
                self.queued_bytes -= size
                await self.hand(data, variant)
                if self._paused and len(inbox) <= RESUME \
                        and self.queued_bytes <= low_bytes and not self._lost:
                    self._paused = False
                    self._io.resume_reading()
            self._inbox = None
        finally:
            self._task = None
            if self._lost:
                await self._close()

    # -- the end -------------------------------------------------------------
    def lost(self) -> None:
        """The transport went away (idempotent). The messages queued still
        reach the node; then it forgets the connection."""
        if self._lost:
            return
        self._lost = True
        self._cancel_timers()
        if self._task is None:
            task = self._the_loop().create_task(self._close())
            _closing.add(task)
            task.add_done_callback(_closing.discard)
        # else: the task handing over messages ends the connection when done.

    async def end(self) -> None:
        """The transport went away, for an adapter that hands messages over
        itself (``hand``): the node forgets the connection now."""
        self._lost = True
        self._cancel_timers()
        await self._close()

    async def _close(self) -> None:
        try:
            await self.node.close(self.conn, self.session)
        finally:
            self._io.finished()

    def _the_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop or asyncio.get_running_loop()

    # -- timers --------------------------------------------------------------
    def _hello_timeout(self) -> None:
        if self.session.phase is Phase.AWAITING_HELLO:
            self.node.close_connection(self.conn, CloseCode.HELLO_TIMEOUT, "no hello in time")

    def _after_frame(self) -> None:
        """The first time the session is authenticated: the hello timer goes,
        the expiry timer comes."""
        identity = self.session.identity
        if self._expiry is None and identity is not None:
            if self._hello is not None:
                self._hello.cancel()
                self._hello = None
            self._expiry = self._the_loop().call_later(
                max(0.0, identity.exp - self.node.clock()), self.node.close_connection,
                self.conn, CloseCode.TOKEN_EXPIRED, "token expired")

    def _cancel_timers(self) -> None:
        if self._hello is not None:
            self._hello.cancel()
            self._hello = None
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = _OFF
