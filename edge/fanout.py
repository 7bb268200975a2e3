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

Time comes in as an argument (``now``), so all of this is testable without an
event loop.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from edge.protocol import CloseCode, Encoded, Priority


class Sink(Protocol):
    """The transport end of one client connection, as the core needs it."""

    def write(self, data: bytes) -> None: ...

    def buffered(self) -> int: ...

    def close(self, code: int, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Budget:
    bytes: int = 1 << 20
    slow_grace: float = 5.0
    hard_factor: int = 4

    def sheds(self, priority: Priority, buffered: int) -> bool:
        """True when a message of ``priority`` is to be dropped at ``buffered``."""
        if priority >= Priority.CONTROL:
            return False
        if priority == Priority.LIKE:
            return buffered >= self.bytes >> 2
        if priority == Priority.COMMENT:
            return buffered >= self.bytes >> 1
        return buffered >= self.bytes


class Verdict(enum.Enum):
    SENT = "sent"
    DROPPED = "dropped"
    CLOSED = "closed"


class Conn:
    """One client connection as the core sees it: who, which wire variant,
    which rooms, and its backpressure state."""

    __slots__ = (
        "budget",
        "cid",
        "closed",
        "last_buffered",
        "name",
        "over_since",
        "peer_skipped",
        "peer_syncing",
        "peer_upto",
        "role",
        "rooms",
        "sink",
        "user",
        "variant",
    )

    def __init__(self, cid: int, sink: Sink, budget: Budget) -> None:
        self.cid = cid
        self.sink = sink
        self.budget = budget
        self.variant = "json"
        self.user = ""
        self.name = ""
        self.role = ""
        self.rooms: set[str] = set()
        self.over_since: float | None = None
        self.closed = False
        # Peer-inbox replay bookkeeping (see EdgeNode.replay_inbox).
        self.peer_syncing = False
        self.peer_skipped = False
        self.peer_upto = 0
        self.last_buffered = 0

    def deliver(self, enc: Encoded, now: float) -> Verdict:
        if self.closed:
            return Verdict.DROPPED
        budget = self.budget
        buffered = self.sink.buffered()
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
        if budget.sheds(enc.priority, buffered):
            self.last_buffered = buffered
            return Verdict.DROPPED
        self.sink.write(enc.frame(self.variant))
        self.last_buffered = self.sink.buffered()
        return Verdict.SENT

    def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.sink.close(code, reason)


@dataclass(slots=True)
class FanoutResult:
    sent: int = 0
    dropped: int = 0
    closed: list[Conn] = field(default_factory=list)


class LocalRoom:
    __slots__ = ("members", "reported_count", "room")

    def __init__(self, room: str) -> None:
        self.room = room
        self.members: set[Conn] = set()
        self.reported_count = 0


class Hub:
    """The rooms that have members on this edge, and their local members."""

    __slots__ = ("rooms",)

    def __init__(self) -> None:
        self.rooms: dict[str, LocalRoom] = {}

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

    def broadcast(self, room: str, enc: Encoded, now: float) -> FanoutResult:
        """Write ``enc`` to every local member of ``room``: one synchronous
        loop, the same bytes for every member of a variant, no awaiting."""
        result = FanoutResult()
        local = self.rooms.get(room)
        if local is None:
            return result
        for conn in local.members:
            verdict = conn.deliver(enc, now)
            if verdict is Verdict.SENT:
                result.sent += 1
            elif verdict is Verdict.DROPPED:
                result.dropped += 1
            else:
                # The caller removes closed connections from every room after
                # the loop (the set must not change while we iterate it).
                result.closed.append(conn)
        return result

    def online_changes(self) -> Iterable[tuple[str, int]]:
        """Rooms whose member count changed since the last call, with the count."""
        for local in self.rooms.values():
            n = len(local.members)
            if n != local.reported_count:
                local.reported_count = n
                yield local.room, n
