"""The state store interface and its embedded (in-memory) implementation.

The Redis (hot copy) and PostgreSQL (durable history) stores of the
distributed deployment implement the same ``StateStore`` protocol.

Two rules every implementation keeps (issue 12):

- **Reads never allocate.** ``versions``, ``changed_since``, ``section`` and
  ``snapshot`` of a room the store does not hold answer "empty" (total 0, no
  sections) and create nothing: no entry, no key, no row. Only ``apply``
  makes a room, and only an authorised writer applies.
- **Sections per room are capped** (``max_sections``): an ``apply`` that would
  add one more section raises ``TooManySections``, atomically with the
  write, however many processes write to the room.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Container, Mapping
from typing import Any, Protocol

from state_versions.versions import Change, RoomState, Section, Snapshot

# What a room may hold unless the composition root says otherwise
# (``EdgeConfig.max_sections``, ``--max-sections``).
DEFAULT_MAX_SECTIONS = 256


class StateStore(Protocol):
    # Changes whenever the store's versions start over (a new in-memory store,
    # a wiped database): versions from another epoch are not comparable.
    epoch: str

    async def apply(self, room: str, section: str, value: Any,
                    expected: int | None = None) -> Change: ...

    async def versions(self, room: str) -> tuple[int, dict[str, int]]: ...

    async def changed_since(self, room: str,
                            known: Mapping[str, int]) -> tuple[int, list[Section]]: ...

    async def section(self, room: str, section: str) -> Section | None: ...

    async def snapshot(self, room: str) -> Snapshot: ...


class IdleRooms:
    """Which rooms have been idle (no write and no member) for ``idle_for``
    seconds. Pure: time is an argument.

    Rooms are kept in the order of their last touch, oldest first, so a sweep
    looks only at the rooms it drops (and at old rooms that turn out to have
    members, which it moves to the young end: their clock restarts when the
    last member leaves, not at the last write)."""

    __slots__ = ("_last", "idle_for")

    def __init__(self, idle_for: float) -> None:
        if not idle_for > 0:
            raise ValueError("idle_for must be positive")
        self.idle_for = idle_for
        self._last: OrderedDict[str, float] = OrderedDict()

    def touch(self, room: str, now: float) -> None:
        """``room`` was written (or seen with members) at ``now``."""
        self._last[room] = now
        self._last.move_to_end(room)

    def forget(self, room: str) -> None:
        self._last.pop(room, None)

    def sweep(self, now: float, busy: Container[str]) -> list[str]:
        """Forget and return the rooms idle at ``now``; ``busy`` rooms (with
        members, or kept by the process) are touched instead."""
        idle: list[str] = []
        last = self._last
        while last:
            room, at = next(iter(last.items()))
            if now - at < self.idle_for:
                break
            if room in busy:
                self.touch(room, now)
            else:
                del last[room]
                idle.append(room)
        return idle

    def __len__(self) -> int:
        return len(self._last)


class MemoryStateStore:
    """Rooms' state in this process. Applies are atomic because they run on
    one event loop without awaiting in between.

    The only state there is: a room dropped by ``drop_idle`` is gone, and a
    write starts it again from total 0 (the epoch stays; a client that
    comes back with versions of the dropped room is ahead of the store and
    gets every section, ``versions_ahead``)."""

    def __init__(self, *, max_sections: int = DEFAULT_MAX_SECTIONS,
                 idle_for: float = float("inf"),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rooms: dict[str, RoomState] = {}
        self.max_sections = max_sections
        self._idle = IdleRooms(idle_for)
        self._clock = clock
        # In memory, versions start over with the process.
        self.epoch = secrets.token_hex(8)

    def __len__(self) -> int:
        """The rooms held."""
        return len(self._rooms)

    async def apply(self, room: str, section: str, value: Any,
                    expected: int | None = None) -> Change:
        state = self._rooms.get(room)
        fresh = state is None
        if state is None:
            state = RoomState(room)
        change = state.apply(section, value, expected, self.max_sections)
        if fresh:
            # Only once the write succeeded: a refused write makes no room.
            self._rooms[room] = state
        self._idle.touch(room, self._clock())
        return change

    def drop_idle(self, busy: Container[str]) -> list[str]:
        """Drop the rooms with no write for ``idle_for`` seconds that are not
        ``busy`` (rooms with members, rooms the process keeps); the dropped."""
        dropped = self._idle.sweep(self._clock(), busy)
        for room in dropped:
            del self._rooms[room]
        return dropped

    async def versions(self, room: str) -> tuple[int, dict[str, int]]:
        state = self._rooms.get(room)
        if state is None:
            return 0, {}
        return state.total, state.versions()

    async def changed_since(self, room: str,
                            known: Mapping[str, int]) -> tuple[int, list[Section]]:
        state = self._rooms.get(room)
        if state is None:
            return 0, []
        return state.total, state.changed_since(known)

    async def section(self, room: str, section: str) -> Section | None:
        state = self._rooms.get(room)
        return None if state is None else state.get(section)

    async def snapshot(self, room: str) -> Snapshot:
        state = self._rooms.get(room)
        if state is None:
            return Snapshot(room, 0, {})
        return state.snapshot()
