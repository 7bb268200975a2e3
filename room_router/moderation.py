"""Sanctions (bans and mutes) of a room's users, and the control messages
that carry moderation to every edge.

Theory of operation
-------------------
The store (``Sanctions``) is the truth: a ban or mute is written there
first, then announced on the bus's one broadcast subject
(``room_router.bus.CONTROL_SUBJECT``) so that every edge applies it to its
own connections at once. The bus is at most once, so no edge relies on the
announcement alone: a join reads the store (one read per join), and each
edge refreshes the mutes of the rooms it serves every few seconds (see
``edge/moderation.py``). Nothing here does I/O except the adapters.

A sanction has an ``until`` (epoch seconds; None: until lifted). An expired
entry is as good as absent: reads ignore it and prune it. Each room holds
at most ``max_per_room`` entries of each kind (``MAX_SANCTIONS_PER_ROOM``,
docs/MODERATION.md "Limits"); a new one past that is refused with
``too_many_sanctions`` once the expired ones are pruned.

Immunity (``immune``): a sanction issued over the wire by a host or
moderator of the room never applies to a host of that room, and a
moderator's never to another moderator; the backend API (``by`` role
``system``) applies to anyone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from wire.errors import TooManySanctions

BAN = "ban"
MUTE = "mute"
KINDS = (BAN, MUTE)
# Entries per room and kind: a room's moderators ban trolls, not audiences.
MAX_SANCTIONS_PER_ROOM = 10_000
# The ``by`` of what the backend API does (the role system: no immunity).
SYSTEM_BY = {"id": "system", "role": "system"}

# The ops a control message carries (CONTROL_SUBJECT).
CONTROL_OPS = frozenset({"ban", "unban", "mute", "unmute", "kick", "disconnect", "close"})


def immune(target_role: str, by_role: str) -> bool:
    """Whether a sanction issued by ``by_role`` spares a user whose role in
    the room is ``target_role`` (see the module docstring)."""
    if by_role not in ("host", "moderator"):
        return False  # the backend (system) moderates anyone
    return target_role == "host" or (target_role == "moderator" and by_role == "moderator")


@dataclass(frozen=True, slots=True)
class Sanction:
    """One ban or mute of ``user`` in ``room``."""

    room: str
    user: str
    kind: str
    until: float | None
    reason: str
    by: Mapping[str, str]
    at: float

    def active(self, now: float) -> bool:
        return self.until is None or self.until > now

    def public(self) -> dict[str, Any]:
        """How the API lists it."""
        return {"room": self.room, "user": self.user, "until": self.until,
                "reason": self.reason, "by": dict(self.by), "at": self.at}

    def pack(self) -> bytes:
        """The stored value (the room, user and kind are in its key)."""
        packed: bytes = msgpack.packb({"until": self.until, "reason": self.reason,
                                       "by": dict(self.by), "at": self.at})
        return packed

    @classmethod
    def unpack(cls, room: str, user: str, kind: str, raw: bytes) -> Sanction | None:
        """A stored value, or None when it is not one (ignored, pruned)."""
        try:
            obj = msgpack.unpackb(raw)
            until = obj["until"]
            by = obj["by"]
            return cls(room, user, kind, None if until is None else float(until),
                       str(obj["reason"]), {"id": str(by["id"]), "role": str(by["role"])},
                       float(obj["at"]))
        except Exception:
            return None


class Sanctions(Protocol):
    """Where bans and mutes live (memory here, Redis in a cluster)."""

    async def put(self, sanction: Sanction, now: float) -> None:
        """Add or replace; ``too_many_sanctions`` past the room's bound."""

    async def remove(self, room: str, kind: str, user: str, now: float) -> bool:
        """Lift; whether an active one was there."""

    async def get(self, room: str, kind: str, user: str, now: float) -> Sanction | None: ...

    async def list(self, room: str, kind: str, now: float) -> list[Sanction]:
        """The active ones, oldest first."""

    async def drop_room(self, room: str) -> None:
        """Forget every sanction of ``room`` (the room was closed)."""


def over_bound(room: str, kind: str, limit: int) -> TooManySanctions:
    return TooManySanctions(f"room {room!r} holds {limit} {kind}s, the maximum; lift some "
                            "first", room=room, limit=limit)


class MemorySanctions:
    """In this process (the embedded deployment, unit tests)."""

    def __init__(self, max_per_room: int = MAX_SANCTIONS_PER_ROOM) -> None:
        self.max_per_room = max_per_room
        self._entries: dict[tuple[str, str], dict[str, Sanction]] = {}

    def _prune(self, room: str, kind: str, now: float) -> dict[str, Sanction]:
        entries = self._entries.get((room, kind), {})
        for user in [u for u, s in entries.items() if not s.active(now)]:
            del entries[user]
        if not entries:
            self._entries.pop((room, kind), None)
        return entries

    async def put(self, sanction: Sanction, now: float) -> None:
        key = (sanction.room, sanction.kind)
        entries = self._entries.get(key, {})
        if sanction.user not in entries and len(entries) >= self.max_per_room:
            entries = self._prune(sanction.room, sanction.kind, now)
            if len(entries) >= self.max_per_room:
                raise over_bound(sanction.room, sanction.kind, self.max_per_room)
        self._entries.setdefault(key, entries)[sanction.user] = sanction

    async def remove(self, room: str, kind: str, user: str, now: float) -> bool:
        entries = self._entries.get((room, kind))
        if entries is None:
            return False
        gone = entries.pop(user, None)
        if not entries:
            del self._entries[(room, kind)]
        return gone is not None and gone.active(now)

    async def get(self, room: str, kind: str, user: str, now: float) -> Sanction | None:
        entries = self._entries.get((room, kind))
        found = entries.get(user) if entries else None
        if found is not None and not found.active(now):
            await self.remove(room, kind, user, now)
            return None
        return found

    async def list(self, room: str, kind: str, now: float) -> list[Sanction]:
        return sorted(self._prune(room, kind, now).values(), key=lambda s: s.at)

    async def drop_room(self, room: str) -> None:
        for kind in KINDS:
            self._entries.pop((room, kind), None)

    def __len__(self) -> int:
        return sum(len(e) for e in self._entries.values())


@dataclass(frozen=True, slots=True)
class Control:
    """One control message: what every edge applies to its connections."""

    op: str
    room: str
    user: str
    until: float | None
    reason: str
    by: Mapping[str, str]


def control_message(op: str, room: str, user: str, until: float | None, reason: str,
                    by: Mapping[str, str]) -> bytes:
    """The bus payload of a moderation op (the one builder): msgpack
    ``{"op", "room", "user", "until", "reason", "by"}`` (``room`` empty for
    ``disconnect``, ``user`` empty for ``close``)."""
    packed: bytes = msgpack.packb({"op": op, "room": room, "user": user, "until": until,
                                   "reason": reason, "by": dict(by)})
    return packed


def parse_control(payload: bytes) -> Control | None:
    """A control message, or None when it is not one (ignored: the bus
    carries only what edges published, but an edge of another version may
    speak a newer op)."""
    try:
        obj = msgpack.unpackb(payload)
        op = obj["op"]
        if op not in CONTROL_OPS:
            return None
        until = obj.get("until")
        by = obj.get("by") or {}
        return Control(op, str(obj.get("room", "")), str(obj.get("user", "")),
                       None if until is None else float(until), str(obj.get("reason", "")),
                       {"id": str(by.get("id", "")), "role": str(by.get("role", ""))})
    except Exception:
        return None
