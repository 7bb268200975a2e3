"""Fan-out: who gets a message, and what happens to a connection that cannot keep up.

Theory of operation
-------------------
A message is encoded once and framed once per wire variant (``Encoded``); the
hub then runs a plain synchronous ``for`` loop over the room's local members
and hands each the same bytes. Nothing here awaits: a slow client can never
slow the loop down, because the loop never waits for it.

Instead, each connection has an outbound *budget* in bytes, checked against
what its transport still holds unsent (``Sink.buffered()``):

- below ``budget/4``  everything is written;
- from ``budget/4``   likes are shed;
- from ``budget/2``   comments (and custom kinds) are shed too;
- from ``budget``     gifts are shed too; only CONTROL frames (state, peer,
                      replies to the connection's own requests) are written;
- a connection that stays at or over ``budget`` for ``slow_grace`` seconds, or
  reaches ``hard_factor * budget``, is closed with ``SLOW_CONSUMER`` (4100);
- so is one that is *stalled* for ``slow_grace`` seconds: shedding (at or
  over ``budget/4``) and its unsent bytes never shrinking between two
  deliveries. Without this rule a client that stopped reading in a room of
  comments and likes would sit at ``budget/2`` forever, since shedding keeps
  its buffer from ever reaching the budget. A slow client that still reads
  (its buffer shrinks now and then) is only degraded, not closed.
  It reconnects and heals: state through versions, peer messages through the
  inbox; actions are gone by design.

Coalescing (adaptive, per room): the first message in a quiet room is written
at once (no added delay). Messages that follow within ``window`` seconds of
the last write are queued, and at the end of the window the queue goes out as
one ``batch`` frame per connection: one write per connection per tick,
whatever the message rate. A batch is built once per wire variant and per
shedding level (all / no likes / gifts and control / control only), so a
connection under backpressure still gets one shared, pre-built frame.

Failure isolation: what goes wrong while a room is written affects that
room's frame only. A sink that raises closes its own connection (1011); a
frame that cannot be built ends that room's loop and is reported in the
result (``FanoutResult.errors``), never raised, so the hub's other queued
rooms are still flushed and no room stays queued forever.

Time comes in as an argument (``now``), so all of this is testable without an
event loop.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

from edge.batch import Batch, Outgoing, latest_state_only
from wire.close_codes import CloseCode
from wire.codecs import JSON, Variant
from wire.encoded import Encoded
from wire.frames import Priority

if TYPE_CHECKING:
    from edge.auth import Identity

try:  # the send loop in C (edge/_sendloop.c); optional, see Hub._write
    from edge._sendloop import write_members as _c_write_members
except ImportError:  # built without a C compiler: the Python loop does it all
    _c_write_members = None  # type: ignore[assignment]


class Sink(Protocol):
    """The transport end of one client connection, as the core needs it.

    A sink over a byte stream whose frames go out unchanged (WebSocket) may
    also have a ``stream`` attribute (see ``Stream``): the hub's write loop
    then calls the stream itself while the connection is keeping up."""

    def write(self, data: bytes) -> None: ...

    def buffered(self) -> int: ...

    def close(self, code: int, reason: str) -> None: ...


class Stream(Protocol):
    """What the write loop's fast path calls: an asyncio transport's three
    methods (C methods under uvloop). ``write(frame)`` must be what the
    sink's ``write(frame)`` does when the stream is not closing, and
    ``get_write_buffer_size`` what its ``buffered`` returns."""

    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Budget:
    bytes: int = 1 << 20
    slow_grace: float = 5.0
    hard_factor: int = 4

    def floor(self, buffered: int) -> Priority:
        """The lowest priority still written to a connection holding
        ``buffered`` unsent bytes."""
        if buffered < self.bytes >> 2:
            return Priority.LIKE
        if buffered < self.bytes >> 1:
            return Priority.COMMENT
        if buffered < self.bytes:
            return Priority.GIFT
        return Priority.CONTROL

    def sheds(self, priority: Priority, buffered: int) -> bool:
        """True when a message of ``priority`` is to be dropped at ``buffered``."""
        return priority < self.floor(buffered)


class Verdict(enum.Enum):
    SENT = "sent"
    DROPPED = "dropped"
    CLOSED = "closed"
    # The sink raised: the connection is closed (1011) and its exception kept
    # in ``Conn.failure``; the room's other members are not affected.
    FAILED = "failed"


class Conn:
    """One client connection as the core sees it: who, which wire variant,
    which rooms, and its backpressure state."""

    __slots__ = (
        "budget",
        "cid",
        "closed",
        "failure",
        "fd",
        "identity",
        "last_buffered",
        "name",
        "over_since",
        "peer_syncing",
        "peer_upto",
        "peer_want",
        "role",
        "rooms",
        "sink",
        "stream",
        "user",
        "variant",
    )

    def __init__(self, cid: int, sink: Sink, budget: Budget) -> None:
        self.cid = cid
        self.sink = sink
        # The sink's byte stream, for the hub's fast path (None: none).
        self.stream: Stream | None = getattr(sink, "stream", None)
        # The stream's socket, for the send loop in C (-1: none). Set only
        # where a frame sent to it is exactly what ``stream.write`` would
        # send: a plain TCP transport, never TLS (edge/ws.py).
        self.fd: int = getattr(sink, "fd", -1)
        self.budget = budget
        self.variant = JSON
        self.user = ""
        self.name = ""
        self.role = ""
        # Who, from the hello on: the per-room roles (moderation's immunity).
        self.identity: Identity | None = None
        self.rooms: set[str] = set()
        self.over_since: float | None = None
        self.closed = False
        # What the sink raised, when it did (Verdict.FAILED).
        self.failure: Exception | None = None
        # Peer delivery (see edge/peers.py): every message of the
        # user up to peer_upto was shown here or acknowledged; peer_want is
        # the highest seq heard live and not shown yet; peer_syncing is True
        # while a replay or gap fill reads the inbox for this connection.
        self.peer_syncing = False
        self.peer_upto = 0
        self.peer_want = 0
        self.last_buffered = 0

    def deliver(self, out: Outgoing, now: float) -> Verdict:
        """Write ``out`` (a message or a batch) as far as the budget admits.
        DROPPED means nothing was written; a batch written in part (its lower
        classes shed) counts as SENT."""
        if self.closed:
            return Verdict.DROPPED
        budget = self.budget
        try:  # zero-cost in 3.11 unless it raises
            buffered = self.sink.buffered()
        except Exception as exc:
            return self._failed(exc)
        stalled = buffered >= budget.bytes >> 2 and buffered >= self.last_buffered
        if buffered >= budget.bytes or stalled:
            if self.over_since is None:
                self.over_since = now
            elif now - self.over_since >= budget.slow_grace:
                self.close(CloseCode.SLOW_CONSUMER, "slow consumer")
                return Verdict.CLOSED
            if buffered >= budget.bytes * budget.hard_factor:
                self.close(CloseCode.SLOW_CONSUMER, "slow consumer")
                return Verdict.CLOSED
        else:
            self.over_since = None
        # An encoder error raises from here, for the hub to handle: it is
        # the message's fault, not this connection's (Hub._write).
        frame = out.frame_from(budget.floor(buffered), self.variant)
        if frame is None:
            self.last_buffered = buffered
            return Verdict.DROPPED
        try:
            self.sink.write(frame)
            self.last_buffered = self.sink.buffered()
        except Exception as exc:
            return self._failed(exc)
        return Verdict.SENT

    def _failed(self, exc: Exception) -> Verdict:
        """The sink raised: this connection is done for; nobody else is."""
        self.failure = exc
        self.close(CloseCode.INTERNAL_ERROR, "internal error")
        return Verdict.FAILED

    def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sink.close(code, reason)
            except Exception as exc:
                # A sink that cannot even close is gone: closed it is.
                self.failure = self.failure or exc


@dataclass(slots=True)
class FanoutResult:
    sent: int = 0
    dropped: int = 0
    closed: list[Conn] = field(default_factory=list)
    # Connections whose sink raised (closed 1011; ``Conn.failure``).
    failed: list[Conn] = field(default_factory=list)
    # Messages that could not be framed (see Hub._write).
    errors: list[FanoutError] = field(default_factory=list)

    def add(self, part: FanoutResult) -> None:
        self.sent += part.sent
        self.dropped += part.dropped
        self.closed.extend(part.closed)
        self.failed.extend(part.failed)
        self.errors.extend(part.errors)


class FanoutError(NamedTuple):
    """A room's frame that could not be built: ``reason`` is a metric label."""

    room: str
    reason: str
    exc: Exception


class LocalRoom:
    __slots__ = ("deferred", "deferred_until", "last_write", "members", "pending", "poll_mode",
                 "queued", "reported_count", "room")

    def __init__(self, room: str) -> None:
        self.room = room
        # True while the room's members take state by polling (no state push).
        self.poll_mode = False
        self.members: set[Conn] = set()
        self.reported_count = 0
        self.pending: list[Encoded] = []
        # True while ``pending`` holds only deferred messages (Hub.offer),
        # which may wait until ``deferred_until`` for a message to carry them.
        self.deferred = False
        self.deferred_until = 0.0
        # True while the room is in the hub's list of rooms to flush.
        self.queued = False
        self.last_write = float("-inf")


class Hub:
    """The rooms that have members on this edge, and their local members.

    ``window`` is the coalescing window in seconds (0 turns coalescing off).
    ``clock`` (monotonic seconds), when given, stamps the *end* of each write
    loop as the room's last write: a big room's loop can outlast the window,
    and what queued meanwhile must then go out together at the next tick, not
    message by message (which would fall further behind exactly when the edge
    is busiest). Without it the loop's start time (``now``) is used."""

    __slots__ = ("_clock", "_dirty", "_send_loop", "defer_window", "next_flush", "rooms",
                 "window")

    def __init__(self, window: float = 0.0, clock: Callable[[], float] | None = None,
                 defer_window: float = 0.25, *, c_send_loop: bool = True) -> None:
        # The send loop in C (edge/_sendloop.c) when built and wanted.
        self._send_loop = _c_write_members if c_send_loop else None
        # How long a deferred message may wait for another to carry it.
        self.defer_window = defer_window
        self.rooms: dict[str, LocalRoom] = {}
        self.window = window
        self._clock = clock
        self._dirty: list[LocalRoom] = []
        # After ``flush``: when the deferred messages it left waiting are
        # due (None: nothing left waiting).
        self.next_flush: float | None = None

    @property
    def send_loop(self) -> str:
        """Which send loop writes the rooms: "c" or "python"."""
        return "python" if self._send_loop is None else "c"

    def join(self, conn: Conn, room: str) -> bool:
        """Add ``conn`` to ``room``; True when the room is new on this edge
        (the caller then subscribes to the room's bus subject)."""
        local = self.rooms.get(room)
        created = local is None
        if local is None:
            local = self.rooms[room] = LocalRoom(room)
        local.members.add(conn)
        conn.rooms.add(room)
        return created

    def leave(self, conn: Conn, room: str) -> bool:
        """Remove ``conn`` from ``room``; True when the room has no local
        member left (the caller then drops the bus subscription)."""
        conn.rooms.discard(room)
        local = self.rooms.get(room)
        if local is None:
            return False
        local.members.discard(conn)
        if not local.members:
            del self.rooms[room]
            return True
        return False

    def count(self, room: str) -> int:
        local = self.rooms.get(room)
        return 0 if local is None else len(local.members)

    def offer(self, room: str, enc: Encoded, now: float, *,
              defer: bool = False) -> FanoutResult | float:
        """Hand ``enc`` to the room's local members: written at once if the
        room is quiet (FanoutResult), else queued for the tick; then the
        return value is the time by which ``flush`` must run.

        ``defer`` (an agent's streamed words, which nobody waits on to the
        millisecond): never a write loop of its own if it can be helped. It
        waits up to ``defer_window`` for the room's next message and goes out
        in that message's frame; a room's other messages are never delayed
        by it (in a 2,000-member room every extra write loop is a few ms that
        the next message may have to wait behind: docs/BENCHMARKS.md)."""
        local = self.rooms.get(room)
        if local is None:
            return FanoutResult()
        if defer:
            if not local.pending:
                self._queue(local)
                local.deferred = True
                local.deferred_until = now + self.defer_window
            local.pending.append(enc)
            return local.deferred_until if local.deferred else local.last_write + self.window
        if local.deferred:
            # Only deferred messages wait: this one carries them, by the
            # usual rule (at once in a quiet room, else at the tick).
            local.deferred = False
            if now - local.last_write >= self.window:
                pending, local.pending = [*local.pending, enc], []
                return self._write_tick(local, pending, now)
            local.pending.append(enc)
            return local.last_write + self.window
        if not local.pending:
            if now - local.last_write >= self.window:
                return self._write_stamped(local, enc, now)
            self._queue(local)
        local.pending.append(enc)
        return local.last_write + self.window

    def flush(self, now: float) -> FanoutResult:
        """Write every queued message: one frame per connection per room.

        A room whose queue holds only deferred messages that may still wait
        (a tick of another room, or a timer set for words that a message has
        carried since) is left queued: written now, they would be a write
        loop of their own, which the room's next message could have to wait
        behind. ``next_flush`` then says when they are due."""
        result = FanoutResult()
        dirty, self._dirty = self._dirty, []
        self.next_flush = None
        for local in dirty:
            local.queued = False
            if local.deferred and local.pending and now < local.deferred_until:
                self._queue(local)
                if self.next_flush is None or local.deferred_until < self.next_flush:
                    self.next_flush = local.deferred_until
                continue
            pending, local.pending = local.pending, []
            local.deferred = False
            if not pending or self.rooms.get(local.room) is not local:
                continue  # the room emptied meanwhile
            result.add(self._write_tick(local, pending, now))
        return result

    def _queue(self, local: LocalRoom) -> None:
        """Put ``local`` in the list of rooms to flush, once."""
        if not local.queued:
            local.queued = True
            self._dirty.append(local)

    def broadcast(self, room: str, enc: Encoded, now: float) -> FanoutResult:
        """Write ``enc`` to the room's members now, bypassing coalescing."""
        local = self.rooms.get(room)
        return FanoutResult() if local is None else self._write(local, enc, now)

    def _write_tick(self, local: LocalRoom, pending: list[Encoded],
                    now: float) -> FanoutResult:
        """The messages of one tick as one frame per connection (latest
        state wins), then stamped as the room's last write."""
        if len(pending) > 1:
            pending = latest_state_only(pending)
        if len(pending) == 1:
            return self._write_stamped(local, pending[0], now)
        batch = Batch(pending)
        result = self._write_stamped(local, batch, now)
        # A batch's ``dropped`` is the messages it shed, not the connections
        # that got nothing (those messages are in ``shed`` too).
        result.dropped = batch.shed
        return result

    def _write_stamped(self, local: LocalRoom, out: Outgoing, now: float) -> FanoutResult:
        """Write, then record when the room's write loop ended (see ``clock``)."""
        result = self._write(local, out, now)
        local.last_write = now if self._clock is None else self._clock()
        return result

    def _write(self, local: LocalRoom, out: Outgoing, now: float) -> FanoutResult:
        """One synchronous loop over the members, the same bytes for every
        member of a variant and floor, no awaiting.

        First the send loop in C (edge/_sendloop.c), where it was built: a
        member with a socket (``Conn.fd``) whose transport holds nothing
        unsent gets the full frame of its variant by send(2), with no Python
        between two sends; it hands back, untouched, every member it does
        not write, for the loop below (which then sees only those).

        The fast path: a member whose sink has a ``stream`` and who keeps up
        (under a quarter of its budget unsent, not in a grace period) takes
        the full frame of its variant straight from the stream's C methods,
        with the bookkeeping ``Conn.deliver`` would do and none of its Python
        calls (the per-delivery cost at moderate rates, where nothing
        coalesces: docs/BENCHMARKS.md). Everyone else goes through
        ``Conn.deliver``, which decides about shedding and closing.

        Failure isolation: whatever goes wrong here stays in this room's
        frame. A sink that raises closes its own connection (FAILED, inside
        ``Conn.deliver`` or here, the same way); a frame that cannot be built
        (an encoder error, which the value rule at decode leaves no room
        for) ends this loop: the members not yet written do not get it, and
        the error is returned for the caller to count and log. Never raised:
        a raise would leave the hub's other queued rooms unflushed. One
        ``try`` around the loop, which costs nothing until it raises."""
        result = FanoutResult()
        sent = 0
        frame_variant: Variant | None = None
        frame: bytes | None = None
        full = Priority.LIKE
        members: Iterable[Conn] = local.members
        try:
            if self._send_loop is not None:
                failed: list[Conn]
                sent, members, failed, error = self._send_loop(
                    members, lambda variant: out.frame_from(full, variant))
                result.failed.extend(failed)
                if error is not None:
                    raise error  # the room's encoder error: below, as the Python loop's
            for conn in members:
                stream = conn.stream
                if stream is not None and conn.over_since is None and not conn.closed:
                    try:
                        buffered = stream.get_write_buffer_size()
                    except Exception as exc:
                        conn._failed(exc)
                        result.failed.append(conn)
                        continue
                    if buffered < conn.budget.bytes >> 2:
                        variant = conn.variant
                        if variant is not frame_variant:
                            # An encoder error raises from here: the room's, below.
                            frame = out.frame_from(full, variant)
                            frame_variant = variant
                        if frame is None:
                            conn.last_buffered = buffered
                            result.dropped += 1
                            continue
                        try:
                            if not stream.is_closing():
                                stream.write(frame)
                            conn.last_buffered = stream.get_write_buffer_size()
                        except Exception as exc:
                            conn._failed(exc)
                            result.failed.append(conn)
                            continue
                        sent += 1
                        continue
                verdict = conn.deliver(out, now)
                if verdict is Verdict.SENT:
                    sent += 1
                elif verdict is Verdict.DROPPED:
                    result.dropped += 1
                elif verdict is Verdict.CLOSED:
                    # The caller removes closed connections from every room
                    # after the loop (the set must not change while we iterate).
                    result.closed.append(conn)
                else:
                    result.failed.append(conn)
        except Exception as exc:
            result.errors.append(FanoutError(local.room, "encode", exc))
        result.sent = sent
        return result

    def online_changes(self, elsewhere: Mapping[str, int] | None = None
                       ) -> Iterable[tuple[str, int]]:
        """Rooms whose member count changed since the last call, with the count:
        the local members plus ``elsewhere`` (members on other edges)."""
        extra = elsewhere or {}
        for local in self.rooms.values():
            n = len(local.members) + extra.get(local.room, 0)
            if n != local.reported_count:
                local.reported_count = n
                yield local.room, n
