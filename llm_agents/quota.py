"""Token quotas: per room and per user, per UTC day; per user tier
(``TierLimits``: tokens and requests, per day and per month) when tiers
are configured (``--quota-tiers``; the token's ``tier`` claim names the
user's, else the default tier's limits apply).

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

import calendar
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from wire.errors import QuotaExceeded

DAY = 86400.0


def day_of(now: float) -> int:
    return int(now // DAY)


def seconds_to_next_day(now: float) -> float:
    return (day_of(now) + 1) * DAY - now


def month_of(now: float) -> int:
    """The UTC month of ``now`` as a count of months since year 0."""
    t = time.gmtime(now)
    return t.tm_year * 12 + t.tm_mon - 1


def seconds_to_next_month(now: float) -> float:
    m = month_of(now) + 1
    start = time.struct_time((m // 12, m % 12 + 1, 1, 0, 0, 0, 0, 1, 0))
    return calendar.timegm(start) - now


@dataclass(frozen=True, slots=True)
class TierLimits:
    """A user tier's budget; 0 means unlimited."""

    tokens_per_day: int = 0
    tokens_per_month: int = 0
    requests_per_day: int = 0
    requests_per_month: int = 0


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    # Tokens a day; 0 means unlimited.
    room_per_day: int = 200_000
    user_per_day: int = 20_000
    # User tiers by name (empty: no tiers, ``user_per_day`` applies to all).
    tiers: Mapping[str, TierLimits] = field(default_factory=dict)
    default_tier: str = ""

    def tier_of(self, tier: str) -> str:
        """The tier whose limits apply to a claim of ``tier`` ("" without tiers)."""
        if not self.tiers:
            return ""
        return tier if tier in self.tiers else self.default_tier


@dataclass(frozen=True, slots=True)
class Reservation:
    room: str
    user: str
    day: int
    tokens: int
    tier: str = ""
    month: int = 0


class QuotaStore(Protocol):
    async def reserve(self, room: str, user: str, tokens: int, now: float,
                      tier: str = "") -> Reservation:
        """Hold ``tokens`` (and one request) for a call; QuotaExceeded
        (``scope``: room | user; with tiers also ``tier``, ``period``: day |
        month, ``unit``: tokens | requests)."""

    async def settle(self, reservation: Reservation, used: int) -> None:
        """Replace the reserved amount with what the call really used."""

    async def used(self, room: str, user: str, now: float) -> tuple[int, int]:
        """Tokens charged today to (the room, the user)."""


class QuotaBook:
    """The pure ledger: counts per (scope, id, day). Old days are dropped
    when a new day's first reservation comes in, so it stays bounded."""

    __slots__ = ("_day", "_month", "_monthly", "_requests", "_rooms", "_users", "limits")

    def __init__(self, limits: QuotaLimits) -> None:
        self.limits = limits
        self._day = -1
        self._month = -1
        self._rooms: dict[str, int] = {}
        self._users: dict[str, int] = {}
        # Tiers: requests of the day per user; [tokens, requests] of the month.
        self._requests: dict[str, int] = {}
        self._monthly: dict[str, list[int]] = {}

    def _roll(self, day: int, month: int) -> None:
        if day != self._day:
            self._day = day
            self._rooms.clear()
            self._users.clear()
            self._requests.clear()
        if month != self._month:
            self._month = month
            self._monthly.clear()

    def _check_tier(self, user: str, tier: str, tokens: int, now: float) -> None:
        """QuotaExceeded when one more call of ``tokens`` breaks a limit of the tier."""
        lim = self.limits.tiers[tier]
        day_t, day_r = self._users.get(user, 0), self._requests.get(user, 0)
        month_t, month_r = self._monthly.get(user, [0, 0])
        for used, want, limit, period, unit in (
                (day_t, tokens, lim.tokens_per_day, "day", "tokens"),
                (day_r, 1, lim.requests_per_day, "day", "requests"),
                (month_t, tokens, lim.tokens_per_month, "month", "tokens"),
                (month_r, 1, lim.requests_per_month, "month", "requests")):
            if limit and used + want > limit:
                retry = seconds_to_next_day(now) if period == "day" \
                    else seconds_to_next_month(now)
                raise QuotaExceeded(f"your {tier} tier's quota of {limit} {unit} a {period} "
                                    "is used up", scope="user", tier=tier, period=period,
                                    unit=unit, limit=limit, retry_after=round(retry))

    def reserve(self, room: str, user: str, tokens: int, now: float,
                tier: str = "") -> Reservation:
        day, month = day_of(now), month_of(now)
        self._roll(day, month)
        lim = self.limits
        tier = lim.tier_of(tier) if user else ""
        if tier:
            self._check_tier(user, tier, tokens, now)
        room_used = self._rooms.get(room, 0)
        if lim.room_per_day and room_used + tokens > lim.room_per_day:
            raise QuotaExceeded(f"the room's token quota of {lim.room_per_day} a day is used up",
                                scope="room", limit=lim.room_per_day,
                                retry_after=round(seconds_to_next_day(now)))
        user_used = self._users.get(user, 0) if user else 0
        if user and not tier and lim.user_per_day and user_used + tokens > lim.user_per_day:
            raise QuotaExceeded(f"your token quota of {lim.user_per_day} a day is used up",
                                scope="user", limit=lim.user_per_day,
                                retry_after=round(seconds_to_next_day(now)))
        self._rooms[room] = room_used + tokens
        if user:
            self._users[user] = user_used + tokens
        if tier:
            self._requests[user] = self._requests.get(user, 0) + 1
            m = self._monthly.setdefault(user, [0, 0])
            m[0] += tokens
            m[1] += 1
        return Reservation(room, user, day, tokens, tier, month)

    def settle(self, r: Reservation, used: int) -> None:
        delta = used - r.tokens
        if r.tier and r.month == self._month and r.user in self._monthly:
            m = self._monthly[r.user]
            m[0] = max(0, m[0] + delta)
        if r.day != self._day:
            return  # that day is over: its counts are gone
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

    async def reserve(self, room: str, user: str, tokens: int, now: float,
                      tier: str = "") -> Reservation:
        return self.book.reserve(room, user, tokens, now, tier)

    async def settle(self, reservation: Reservation, used: int) -> None:
        self.book.settle(reservation, used)

    async def used(self, room: str, user: str, now: float) -> tuple[int, int]:
        return self.book.used(room, user, now)
