"""The state store interface and its embedded (in-memory) implementation.

The Redis (hot copy) and PostgreSQL (durable history) stores of the
distributed deployment implement the same ``StateStore`` protocol.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Protocol

from state_versions.versions import Change, RoomState, Section, Snapshot


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


class MemoryStateStore:
    """Rooms' state in this process. Applies are atomic because they run on
    one event loop without awaiting in between."""

    def __init__(self) -> None:
        self._rooms: dict[str, RoomState] = {}
        # In memory, versions start over with the process.
        self.epoch = secrets.token_hex(8)

    def _room(self, room: str) -> RoomState:
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = RoomState(room)
        return state

    async def apply(self, room: str, section: str, value: Any,
                    expected: int | None = None) -> Change:
        return self._room(room).apply(section, value, expected)

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
        return self._room(room).snapshot()
