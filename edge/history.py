"""Room history on one edge node: keeping the actions a room's policy names,
reading them back for ``joined`` and ``GET /v1/rooms/{room}/history``, and
retracting one by its action id.

Keeping is on the action path (``EdgeNode.publish_action``), so it never
awaits there: a room whose policy keeps no history of the kind costs one
policy lookup; with the memory store the entry is added at once; with a
remote store (Redis) it is queued and one writer task drains the queue, in
order, at most ``max_pending`` waiting (past that an entry is dropped and
counted: history is best effort, the room's live actions are not held up).
Only the stamping edge keeps an action, so it is kept once in the cluster.

Retract: the store drops the entry and the room gets a ``retract`` frame on
its bus subject, so every edge's members remove it, whether or not the
store still held it (an action past the history may still be on screens).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from plumbing.ratelog import RateLimitedLog
from room_router.bus import Bus, room_subject
from room_router.events import NO_EVENTS, EventSink
from room_router.events import moderation as moderation_event
from room_router.history import Entry, HistoryStore, MemoryHistoryStore
from room_router.roomconfig import RoomPolicies
from wire.codecs import encode_msgpack
from wire.outgoing import retract_frame

# The history a ``joined`` carries at most, in msgpack bytes (the newest
# entries that fit): the reply is charged to the joiner's frame budget.
MAX_JOIN_HISTORY_BYTES = 256 * 1024
# Entries waiting for a remote store at most.
MAX_PENDING = 10_000


class EdgeHistory:
    def __init__(self, *, store: HistoryStore, policies: RoomPolicies, bus: Bus,
                 clock: Callable[[], float], errlog: RateLimitedLog,
                 max_pending: int = MAX_PENDING, events: EventSink = NO_EVENTS) -> None:
        self.store = store
        # Retractions are moderation events to the backend (room_router/events.py).
        self.events = events
        self.policies = policies
        self.bus = bus
        self.clock = clock
        self.errlog = errlog
        self._memory = store if isinstance(store, MemoryHistoryStore) else None
        self._pending: deque[tuple[str, Entry, int, float]] = deque()
        self._max_pending = max_pending
        self._writer: asyncio.Task[None] | None = None
        # Entries not kept: the queue was full, or the store failed.
        self.dropped = 0
        self.failures = 0

    # -- keeping (the action path: no await) -----------------------------------
    def keep(self, room: str, kind: str, action_id: str, ts: float, payload: bytes) -> None:
        """Keep a just-published action if the room's policy keeps its kind."""
        policy = self.policies.policy(room)
        if not policy.keeps_history_of(kind):
            return
        entry = Entry(action_id, ts, payload)
        if self._memory is not None:
            self._memory.add(room, entry, policy.history, policy.history_ttl, ts)
            return
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            self.errlog.warning("history:full", "history queue full (%d): an action of "
                                "room %r is not kept", self._max_pending, room[:64])
            return
        self._pending.append((room, entry, policy.history, policy.history_ttl))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending:
                room, entry, size, ttl = self._pending.popleft()
                try:
                    await self.store.append(room, entry, size, ttl, entry.ts)
                except Exception as exc:
                    self.failures += 1
                    self.errlog.warning(f"history:{type(exc).__name__}",
                                        "keeping an action of room %r failed: %s",
                                        room[:64], exc)
        finally:
            self._writer = None

    async def flush(self) -> None:
        """Wait until the queued entries are written (tests, shutdown)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()

    # -- reading ----------------------------------------------------------------
    def keeps(self, room: str) -> bool:
        return self.policies.policy(room).history > 0

    async def frames(self, room: str, limit: int | None = None,
                     max_bytes: int | None = None) -> list[dict[str, Any]]:
        """The room's kept action frames, oldest first: at most ``limit``
        (default: the policy's size) and ``max_bytes`` (the newest that fit)."""
        policy = self.policies.policy(room)
        n = policy.history if limit is None else min(limit, policy.history)
        entries = await self.store.recent(room, n, policy.history_ttl, self.clock())
        if max_bytes is not None:
            kept, size = 0, 0
            for entry in reversed(entries):
                size += len(entry.payload)
                if size > max_bytes:
                    break
                kept += 1
            entries = entries[len(entries) - kept:]
        return [msgpack.unpackb(e.payload, raw=False) for e in entries]

    def for_join(self, room: str) -> Awaitable[list[dict[str, Any]]] | None:
        """What ``joined`` carries: None for a room that keeps no history."""
        if not self.keeps(room):
            return None
        return self._join_frames(room)

    async def _join_frames(self, room: str) -> list[dict[str, Any]]:
        # A join never fails for its history: the store down, it is empty.
        try:
            return await self.frames(room, max_bytes=MAX_JOIN_HISTORY_BYTES)
        except Exception as exc:
            self.errlog.warning(f"history_read:{type(exc).__name__}",
                                "reading the history of room %r failed: %s", room[:64], exc)
            return []

    # -- retract ----------------------------------------------------------------
    async def retract(self, room: str, action_id: str, by: str) -> bool:
        """Drop ``action_id`` from the room's history and tell every edge's
        members (``retract``, CONTROL priority) and the backend (a
        ``moderation`` event, ``by``: who retracted); whether history held it."""
        held = False
        if self.keeps(room):
            await self.flush_room_writes()
            held = await self.store.retract(room, action_id)
        self.bus.publish(room_subject(room), encode_msgpack(retract_frame(room, action_id)))
        self.events.emit(room, "moderation", moderation_event("retract", "", by,
                                                              action_id=action_id))
        return held

    async def flush_room_writes(self) -> None:
        """A retract right after its action must find it in the store."""
        if self._pending:
            await self.flush()
