"""Peer delivery on one edge node: a peer message from its sender to the
addressee's local connections, in seq order with no gap, paced by each
connection's budget.

The path: ``send`` appends the message to the durable inbox (within the
addressee's cap) -> ``peer_ack`` to the sender -> the connection registry
says which nodes hold the addressee -> bus ``node.<id>`` ->
``on_node_message`` on each of those nodes writes it to the addressee's local
connections. A hello hands its connection over with ``attach`` (the inbox
replay); an ``ack`` removes what a connection was shown from the inbox.

Theory of operation. Per connection, ``conn.peer_upto`` is the end of the
shown prefix: every message of the user up to it was shown on this
connection or acknowledged. Acks are clamped to it, so an ack never passes a
message this connection did not see. A live copy (bus ``node.<id>``) carries
the message's ``prev`` (room_router/inbox.py):
- ``seq <= peer_upto``: shown already (a repeat, or read from the inbox
  first): dropped;
- ``prev <= peer_upto`` and the connection is below the pacing mark: it
  continues the prefix, so it is written at once (the common case: no read of
  the inbox);
- otherwise (a gap: a lower copy late or lost; or a backlog): it is not
  written; ``peer_want`` remembers it and one fill task reads the inbox from
  ``peer_upto`` and shows what follows, in order, paced.
A message is in the inbox before its copy is published, and a user's messages
become visible in seq order, so a fill finds every message up to the copy
that started it. If it does not (a replica behind), the fill reads again,
``_FILL_RETRIES`` times ``_FILL_RETRY_S`` apart, and then stops: that message
is shown by the fill of the user's next message, or by the replay of the next
connect.
Pacing: the replay and fills write only while the connection holds less than
budget/8 unsent (``_pace_mark``) and otherwise poll until it drains; a
connection whose unsent bytes stop shrinking for ``slow_grace`` seconds is
left alone (the rest waits in the inbox). So a backlog never takes a reader
to the slow-consumer close, and the replay never starts the budget's shedding
of its room actions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from edge.config import EdgeConfig
from edge.fanout import Conn
from edge.metrics import Metrics
from plumbing.ratelog import RateLimitedLog
from room_router.bus import Bus, node_subject
from room_router.inbox import Inbox, InboxCap, PeerMessage
from room_router.registry import ConnectionRegistry
from wire.codecs import encode_msgpack
from wire.encoded import Encoded
from wire.errors import InboxFull
from wire.frames import Priority
from wire.incoming import AckPeer, SendPeer
from wire.outgoing import inbox_frame, peer_ack_frame, peer_frame

# Write one encoded frame to one connection at monotonic time ``now``
# (``EdgeNode._deliver``: False when it could not be framed).
Deliver = Callable[[Conn, Encoded, float], bool]
# A CONTROL frame to one connection (``EdgeNode._reply``).
Reply = Callable[[Conn, dict[str, Any]], None]


class PeerDelivery:
    """The peer side of one edge node (see the theory of operation above).
    ``users`` is the node's table of authenticated local connections per user
    (the node removes a connection from it when it closes); it is where a live
    copy finds its addressee."""

    def __init__(self, *, config: EdgeConfig, inbox: Inbox, registry: ConnectionRegistry,
                 bus: Bus, metrics: Metrics, errlog: RateLimitedLog,
                 clock: Callable[[], float], monotonic: Callable[[], float],
                 users: dict[str, set[Conn]], deliver: Deliver, reply: Reply) -> None:
        self.config = config
        self.inbox = inbox
        self.registry = registry
        self.bus = bus
        self.metrics = metrics
        self.errlog = errlog
        self.clock = clock
        self._monotonic = monotonic
        self.users = users
        self._deliver = deliver
        self._reply = reply
        self._inbox_cap = InboxCap(config.inbox_max_messages, config.inbox_max_bytes)
        # Running gap fills (one at most per connection: Conn.peer_syncing).
        self._fills: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """Cancel the running gap fills (their messages wait in the inbox)."""
        for task in list(self._fills):
            task.cancel()

    # -- from the sender ---------------------------------------------------
    async def send(self, conn: Conn, cmd: SendPeer) -> None:
        try:
            msg, new = await self._append(cmd.to, conn.user, conn.name, cmd.id, cmd.body)
        except InboxFull as err:
            err.ref = cmd.ref
            raise
        self._reply(conn, peer_ack_frame(cmd.id, msg.seq, cmd.ref, not new))
        if new:
            await self.deliver(msg)

    async def post(self, to: str, sender: str, sender_name: str, msg_id: str,
                   body: Any) -> tuple[PeerMessage, bool]:
        """A message with no sender connection (the backend API): the same
        path as ``send`` (durable first, within the cap, a retry of ``msg_id``
        stored once), answered by the return value: (message, new)."""
        msg, new = await self._append(to, sender, sender_name, msg_id, body)
        if new:
            await self.deliver(msg)
        return msg, new

    async def _append(self, to: str, sender: str, sender_name: str, msg_id: str,
                      body: Any) -> tuple[PeerMessage, bool]:
        msg, new = await self.inbox.append(to, sender, sender_name, msg_id, body,
                                           self.clock(), self._inbox_cap)
        if new:
            self.metrics.peer_messages.inc()
        return msg, new

    async def deliver(self, msg: PeerMessage) -> None:
        """Publish a stored message to every node that holds its addressee."""
        payload = encode_msgpack(_peer_frame(msg))
        for node in await self.registry.nodes(msg.to):
            self.bus.publish(node_subject(node), payload)

    # -- to the addressee ----------------------------------------------------
    async def attach(self, conn: Conn, inbox_cursor: int | None) -> None:
        """The peer side of an accepted hello: live copies reach ``conn`` from
        here on, after the inbox replay (resumed from ``inbox_cursor`` when
        the client gave one, then answered with an ``inbox`` frame)."""
        # Live copies reach this connection from here on; until the replay
        # below has read the inbox they only raise peer_want (they are in
        # the inbox: the replay shows them in order). No await in between,
        # so nothing published before this point escapes the replay.
        if inbox_cursor is not None:
            conn.peer_upto = max(conn.peer_upto, inbox_cursor)
        conn.peer_syncing = True
        self.users.setdefault(conn.user, set()).add(conn)
        if inbox_cursor is None:
            await self.replay_inbox(conn)
            return
        # A resuming client said what it has: replay only what follows, then
        # say honestly whether the inbox could be read to the end.
        start = conn.peer_upto
        reason: str | None = None
        try:
            if not await self.replay_inbox(conn):
                reason = "not_draining"
        except Exception:
            self.errlog.exception("inbox_replay", "inbox replay failed for %s", conn.user)
            reason = "inbox_unavailable"
        self._reply(conn, inbox_frame(reason is None, reason, conn.peer_upto, start))

    async def ack(self, conn: Conn, cmd: AckPeer) -> None:
        # A connection acknowledges only what it was shown: an ack past
        # that must not make unseen messages vanish.
        upto = min(cmd.upto, conn.peer_upto)
        if upto > 0:
            await self.inbox.ack(conn.user, upto)

    async def replay_inbox(self, conn: Conn) -> bool:
        """Show the user's unacknowledged peer messages in seq order, paced by
        the connection's budget. Live copies that come meanwhile wait for it.
        False when the connection stopped reading before the end (the rest
        waits in the inbox)."""
        conn.peer_syncing = True
        try:
            return await self._fill(conn)
        finally:
            conn.peer_syncing = False

    def on_node_message(self, subject: str, payload: bytes) -> None:
        """A live copy from bus ``node.<id>`` (subscribed by the node)."""
        enc = Encoded.from_msgpack(payload, Priority.CONTROL)
        obj = enc.obj
        to, seq, prev = str(obj.get("to", "")), int(obj.get("seq", 0)), int(obj.get("prev", 0))
        now = self._monotonic()
        for conn in self.users.get(to, ()):
            if seq <= conn.peer_upto:
                continue
            if conn.peer_syncing:
                conn.peer_want = max(conn.peer_want, seq)  # the running read shows it
            elif prev <= conn.peer_upto and conn.sink.buffered() < _pace_mark(conn):
                self._deliver(conn, enc, now)
                conn.peer_upto = seq
            else:
                conn.peer_want = max(conn.peer_want, seq)
                self._start_fill(conn)

    # -- gap fill and pacing -------------------------------------------------
    def _start_fill(self, conn: Conn) -> None:
        conn.peer_syncing = True
        self.metrics.peer_fills.inc()
        task = asyncio.get_running_loop().create_task(self._fill_live(conn))
        self._fills.add(task)
        task.add_done_callback(self._fills.discard)

    async def _fill_live(self, conn: Conn) -> None:
        try:
            await self._fill(conn)
        except Exception as exc:
            # The messages wait in the inbox: the next copy or connect retries.
            self.errlog.warning(f"peer_fill:{type(exc).__name__}",
                                "peer gap fill for %s failed: %s: %s", conn.user,
                                type(exc).__name__, exc)
        finally:
            conn.peer_syncing = False

    async def _fill(self, conn: Conn) -> bool:
        """Show what follows ``conn.peer_upto`` in the inbox, in order, paced,
        until the inbox has nothing more and every copy heard live was
        shown (or ``_FILL_RETRIES`` reads found it not yet visible). False
        when the connection closed or stopped reading."""
        limit = self.config.inbox_replay
        misses = 0
        while not conn.closed:
            batch = await self.inbox.pending(conn.user, conn.peer_upto, limit)
            for msg in batch:
                if msg.seq <= conn.peer_upto:
                    continue
                if not await self._paced(conn):
                    return False
                self._deliver(conn, Encoded(_peer_frame(msg)), self._monotonic())
                conn.peer_upto = msg.seq
            if len(batch) >= limit:
                continue
            if conn.peer_want <= conn.peer_upto:
                return True
            misses = 0 if batch else misses + 1
            if misses > _FILL_RETRIES:
                return True  # see the theory of operation: the next message or connect
            await asyncio.sleep(_FILL_RETRY_S)
        return False

    async def _paced(self, conn: Conn) -> bool:
        """Wait until the connection holds less than the pacing mark unsent.
        False when it closed, or its unsent bytes did not shrink for
        ``slow_grace`` seconds (a bounded poll: no hook into the transport)."""
        mark = _pace_mark(conn)
        last = conn.sink.buffered()
        since = self._monotonic()
        while not conn.closed:
            buffered = conn.sink.buffered()
            if buffered < mark:
                return True
            now = self._monotonic()
            if buffered < last:
                last, since = buffered, now
            elif now - since >= conn.budget.slow_grace:
                return False
            await asyncio.sleep(_DRAIN_POLL_S)
        return False


# How often a fill reads the inbox again for a copy whose message is not
# visible yet, and how far apart (see the theory of operation).
_FILL_RETRIES = 5
_FILL_RETRY_S = 0.05
# How often a paced replay looks whether its connection drained.
_DRAIN_POLL_S = 0.01


def _pace_mark(conn: Conn) -> int:
    """Unsent bytes below which peer messages are written (budget/8: under
    the budget/4 where room actions start to be shed, with room for one
    more message of up to a frame's size)."""
    return conn.budget.bytes >> 3


def _peer_frame(msg: PeerMessage) -> dict[str, Any]:
    """The ``peer`` frame of a stored message (the inbox keeps no wire shapes)."""
    return peer_frame(msg.seq, msg.prev, msg.to, msg.sender, msg.sender_name, msg.id,
                      msg.body, msg.ts)
