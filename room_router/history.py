"""Room history: the last actions of a room, kept for rooms whose policy
says so (``RoomPolicy.history``, ``history_kinds``, ``history_ttl``), sent
on join and readable over HTTP; an entry can be retracted by its action id.

An entry is an ``action`` frame exactly as it went on the bus (msgpack
bytes, with its ``id`` and ``ts``): the store keeps no wire shapes of its
own, and nothing is encoded again to keep it. Time is an argument (``now``),
so the memory implementation is pure and unit-testable.

Bounds (docs/PROTOCOL.md, "History"): a room keeps at most ``size`` entries
(the policy's ``history``, at most 1 000), an entry older than ``ttl`` is
not answered, a room nobody wrote to for ``ttl`` is forgotten, and the memory
store holds at most ``max_rooms`` rooms: a new room past that evicts first
the expired rooms, then the one whose last write is oldest.

The embedded deployment keeps history in memory; the cluster keeps it in
Redis (``room_router/history_redis.py``), behind the same protocol.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

# Rooms the memory store holds at most (each at most ``size`` entries).
DEFAULT_MAX_ROOMS = 10_000


@dataclass(frozen=True, slots=True)
class Entry:
    """One kept action: its cluster-unique id, its stamp time, its frame."""

    id: str
    ts: float
    payload: bytes  # the action frame, msgpack, as published


class HistoryStore(Protocol):
    async def append(self, room: str, entry: Entry, size: int, ttl: float,
                     now: float) -> None:
        """Keep ``entry`` as the room's newest; at most ``size`` are kept, the
        room expires ``ttl`` seconds after ``now`` unless written again."""

    async def recent(self, room: str, limit: int, ttl: float, now: float) -> list[Entry]:
        """At most ``limit`` of the room's newest entries no older than
        ``ttl`` at ``now``, oldest first."""

    async def retract(self, room: str, action_id: str) -> bool:
        """Drop the entry ``action_id``; whether the room held it."""

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Room:
    entries: deque[Entry]
    expires: float = 0.0
    ids: set[str] = field(default_factory=set)


class MemoryHistoryStore:
    """``HistoryStore`` in this process (see the module docstring)."""

    def __init__(self, max_rooms: int = DEFAULT_MAX_ROOMS) -> None:
        self.max_rooms = max_rooms
        self._rooms: dict[str, _Room] = {}

    def __len__(self) -> int:
        return len(self._rooms)

    async def append(self, room: str, entry: Entry, size: int, ttl: float,
                     now: float) -> None:
        self.add(room, entry, size, ttl, now)

    def add(self, room: str, entry: Entry, size: int, ttl: float, now: float) -> None:
        """``append`` without the await (the edge calls it directly)."""
        held = self._rooms.get(room)
        if held is None:
            if len(self._rooms) >= self.max_rooms:
                self._evict(now)
            held = self._rooms[room] = _Room(deque())
        if held.entries.maxlen != size:
            held.entries = deque(held.entries, maxlen=size)  # the policy changed
            held.ids = {e.id for e in held.entries}
        if len(held.entries) == size and size > 0:
            held.ids.discard(held.entries[0].id)
        held.entries.append(entry)
        held.ids.add(entry.id)
        held.expires = now + ttl

    def _evict(self, now: float) -> None:
        """Room for one more room: the expired ones go, else the one whose
        last write is oldest."""
        for name in [n for n, r in self._rooms.items() if r.expires <= now]:
            del self._rooms[name]
        if len(self._rooms) >= self.max_rooms:
            oldest = min(self._rooms, key=lambda n: self._rooms[n].expires)
            del self._rooms[oldest]

    async def recent(self, room: str, limit: int, ttl: float, now: float) -> list[Entry]:
        return self.read(room, limit, ttl, now)

    def read(self, room: str, limit: int, ttl: float, now: float) -> list[Entry]:
        held = self._rooms.get(room)
        if held is None or limit <= 0:
            return []
        if held.expires <= now:
            del self._rooms[room]
            return []
        since = now - ttl
        fresh = [e for e in held.entries if e.ts >= since]
        return fresh[-limit:]

    async def retract(self, room: str, action_id: str) -> bool:
        return self.drop(room, action_id)

    def drop(self, room: str, action_id: str) -> bool:
        held = self._rooms.get(room)
        if held is None or action_id not in held.ids:
            return False
        held.ids.discard(action_id)
        held.entries = deque((e for e in held.entries if e.id != action_id),
                             maxlen=held.entries.maxlen)
        return True

    async def close(self) -> None:
        self._rooms.clear()
