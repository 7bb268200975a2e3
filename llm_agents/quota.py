"""Token quotas: per room and per user, per UTC day.

Before a model call the runtime *reserves* the estimated tokens (prompt
estimate + the reply's token limit) against both the room's and the user's
budget of the day; after it, it *settles* with the real usage, giving back
what the reply did not use (or charging the overrun). A reservation that
does not fit raises ``QuotaExceeded`` (HTTP 429): the character declines
with a short line, a direct API call is answered 429.

``QuotaStore`` is the interface; ``MemoryQuotaStore`` serves the embedded
deployment (one process). A Redis implementation (one ``INCRBY`` script per
reservation on ``quota:{room}:<day>`` keys) serves the distributed one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from wire.errors import QuotaExceeded

DAY = 86400.0


def day_of(now: float) -> int:
    return int(now // DAY)


def seconds_to_next_day(now: float) -> float:
    return (day_of(now) + 1) * DAY - now


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    # Tokens a day; 0 means unlimited.
    room_per_day: int = 200_000
    user_per_day: int = 20_000


@dataclass(frozen=True, slots=True)
class Reservation:
    room: str
    user: str
    day: int
    tokens: int


class QuotaStore(Protocol):
    async def reserve(self, room: str, user: str, tokens: int, now: float) -> Reservation:
        """Hold ``tokens`` for a call; QuotaExceeded (``scope``: room | user)."""

    async def settle(self, reservation: Reservation, used: int) -> None:
        """Replace the reserved amount with what the call really used."""

    async def used(self, room: str, user: str, now: float) -> tuple[int, int]:
        """Tokens charged today to (the room, the user)."""


class QuotaBook:
    """The pure ledger: counts per (scope, id, day). Old days are dropped
    when a new day's first reservation comes in, so it stays bounded."""

    __slots__ = ("_day", "_rooms", "_users", "limits")

    def __init__(self, limits: QuotaLimits) -> None:
        self.limits = limits
        self._day = -1
        self._rooms: dict[str, int] = {}
        self._users: dict[str, int] = {}

    def _roll(self, day: int) -> None:
        if day != self._day:
            self._day = day
            self._rooms.clear()
            self._users.clear()

    def reserve(self, room: str, user: str, tokens: int, now: float) -> Reservation:
        day = day_of(now)
        self._roll(day)
        lim = self.limits
        room_used = self._rooms.get(room, 0)
        if lim.room_per_day and room_used + tokens > lim.room_per_day:
            raise QuotaExceeded(f"the room's token quota of {lim.room_per_day} a day is used up",
                                scope="room", limit=lim.room_per_day,
                                retry_after=round(seconds_to_next_day(now)))
        user_used = self._users.get(user, 0) if user else 0
        if user and lim.user_per_day and user_used + tokens > lim.user_per_day:
            raise QuotaExceeded(f"your token quota of {lim.user_per_day} a day is used up",
                                scope="user", limit=lim.user_per_day,
                                retry_after=round(seconds_to_next_day(now)))
        self._rooms[room] = room_used + tokens
        if user:
            self._users[user] = user_used + tokens
        return Reservation(room, user, day, tokens)

    def settle(self, r: Reservation, used: int) -> None:
        if r.day != self._day:
            return  # that day is over: its counts are gone
        delta = used - r.tokens
        self._rooms[r.room] = max(0, self._rooms.get(r.room, 0) + delta)
        if r.user:
            self._users[r.user] = max(0, self._users.get(r.user, 0) + delta)

    def used(self, room: str, user: str, now: float) -> tuple[int, int]:
        if day_of(now) != self._day:
            return 0, 0
        return self._rooms.get(room, 0), self._users.get(user, 0)


class MemoryQuotaStore:
    def __init__(self, limits: QuotaLimits) -> None:
        self.book = QuotaBook(limits)

    async def reserve(self, room: str, user: str, tokens: int, now: float) -> Reservation:
        return self.book.reserve(room, user, tokens, now)

    async def settle(self, reservation: Reservation, used: int) -> None:
        self.book.settle(reservation, used)

    async def used(self, room: str, user: str, now: float) -> tuple[int, int]:
        return self.book.used(room, user, now)
