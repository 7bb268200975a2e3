"""The Redis quota store: token quotas shared by several agents processes.

Keys, one counter per scope and UTC day, each expiring two days after it was
last touched:

    quota:{room:<room>}:<day>     tokens charged to a room today
    quota:{user:<user>}:<day>     tokens charged to a user today

With tiers (``--quota-tiers``), a user's tier budget is four more counters
in the user's slot, checked and taken together by one script:

    quota:{user:<user>}:d<day>:t / :d<day>:r      tokens / requests today
    quota:{user:<user>}:m<month>:t / :m<month>:r  tokens / requests this month

(the day ones expire two days, the month ones 62 days after the last touch).

The ``{…}`` hash tags keep every key in one slot per room or user, so a
Redis Cluster works as well as one server. A reservation is one script per
key (check the limit, then ``INCRBY``) so two processes cannot both take the
last tokens. The room and the user counters live in different slots, so
they are reserved one after the other: when the user's fails, the room's
reservation is given back (the counters may overshoot by a reservation for
the moment between the two calls, never settle wrong).
"""

from __future__ import annotations

from typing import Any

from llm_agents.quota import (
    QuotaLimits,
    Reservation,
    day_of,
    month_of,
    seconds_to_next_day,
    seconds_to_next_month,
)
from wire.errors import QuotaExceeded

TTL_S = 2 * 86400

# KEYS[1] counter; ARGV[1] tokens, ARGV[2] limit (0: none), ARGV[3] ttl.
# Returns the new count, or -1 when the tokens do not fit.
_RESERVE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local want = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if limit > 0 and used + want > limit then
  return -1
end
local v = redis.call('INCRBY', KEYS[1], want)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return v
"""

# KEYS[1] counter; ARGV[1] delta (may be negative). Never below zero.
_ADJUST = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local v = redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))
if v < 0 then
  redis.call('SET', KEYS[1], 0, 'KEEPTTL')
  v = 0
end
return v
"""


# KEYS: day tokens, day requests, month tokens, month requests (one slot);
# ARGV[1] tokens, ARGV[2..5] the four limits (0: none), ARGV[6] day ttl,
# ARGV[7] month ttl. Returns 0 when taken, else the 1-based index of the
# first limit the call would break (nothing is taken then).
_RESERVE_TIER = """
local want = {tonumber(ARGV[1]), 1, tonumber(ARGV[1]), 1}
for i = 1, 4 do
  local limit = tonumber(ARGV[i + 1])
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if limit > 0 and used + want[i] > limit then
    return i
  end
end
for i = 1, 4 do
  redis.call('INCRBY', KEYS[i], want[i])
  redis.call('EXPIRE', KEYS[i], tonumber(i <= 2 and ARGV[6] or ARGV[7]))
end
return 0
"""
MONTH_TTL_S = 62 * 86400


def tier_keys(user: str, day: int, month: int) -> list[str]:
    base = f"quota:{{user:{user}}}"
    return [f"{base}:d{day}:t", f"{base}:d{day}:r", f"{base}:m{month}:t", f"{base}:m{month}:r"]


def room_key(room: str, day: int) -> str:
    return f"quota:{{room:{room}}}:{day}"


def user_key(user: str, day: int) -> str:
    return f"quota:{{user:{user}}}:{day}"


class RedisQuotaStore:
    """``QuotaStore`` on Redis (redis-py's asyncio client, or its Cluster
    client: both run scripts with ``eval``)."""

    def __init__(self, client: Any, limits: QuotaLimits) -> None:
        self._redis = client
        self.limits = limits

    async def _reserve_one(self, key: str, tokens: int, limit: int) -> bool:
        got = await self._redis.eval(_RESERVE, 1, key, tokens, limit, TTL_S)
        return int(got) >= 0

    async def _adjust(self, key: str, delta: int) -> None:
        if delta:
            await self._redis.eval(_ADJUST, 1, key, delta)

    async def _reserve_tier(self, user: str, tier: str, tokens: int, now: float) -> None:
        """Take one request and ``tokens`` of the tier's day and month
        budgets, all or nothing; QuotaExceeded naming the limit broken."""
        lim = self.limits.tiers[tier]
        limits = (lim.tokens_per_day, lim.requests_per_day, lim.tokens_per_month,
                  lim.requests_per_month)
        broken = int(await self._redis.eval(
            _RESERVE_TIER, 4, *tier_keys(user, day_of(now), month_of(now)), tokens, *limits,
            TTL_S, MONTH_TTL_S))
        if broken:
            period = "day" if broken <= 2 else "month"
            unit = "tokens" if broken % 2 else "requests"
            limit = limits[broken - 1]
            retry = seconds_to_next_day(now) if period == "day" else seconds_to_next_month(now)
            raise QuotaExceeded(f"your {tier} tier's quota of {limit} {unit} a {period} "
                                "is used up", scope="user", tier=tier, period=period,
                                unit=unit, limit=limit, retry_after=round(retry))

    async def reserve(self, room: str, user: str, tokens: int, now: float,
                      tier: str = "") -> Reservation:
        day = day_of(now)
        lim = self.limits
        tier = lim.tier_of(tier) if user else ""
        retry = round(seconds_to_next_day(now))
        if tier:
            # The tier first: a refusal there leaves nothing to give back.
            await self._reserve_tier(user, tier, tokens, now)
        if not await self._reserve_one(room_key(room, day), tokens, lim.room_per_day):
            if tier:
                await self._give_back_tier(user, day, month_of(now), tokens)
            raise QuotaExceeded(f"the room's token quota of {lim.room_per_day} a day is used up",
                                scope="room", limit=lim.room_per_day, retry_after=retry)
        # The user's day counter is kept for every user (``used``); a tier
        # replaces the flat user limit (as in the memory store).
        user_limit = 0 if tier else lim.user_per_day
        if user and not await self._reserve_one(user_key(user, day), tokens, user_limit):
            await self._adjust(room_key(room, day), -tokens)
            raise QuotaExceeded(f"your token quota of {lim.user_per_day} a day is used up",
                                scope="user", limit=lim.user_per_day, retry_after=retry)
        return Reservation(room, user, day, tokens, tier, month_of(now))

    async def _give_back_tier(self, user: str, day: int, month: int, tokens: int) -> None:
        for key, n in zip(tier_keys(user, day, month), (tokens, 1, tokens, 1), strict=True):
            await self._adjust(key, -n)

    async def settle(self, reservation: Reservation, used: int) -> None:
        delta = used - reservation.tokens
        r = reservation
        await self._adjust(room_key(r.room, r.day), delta)
        if r.user:
            await self._adjust(user_key(r.user, r.day), delta)
        if r.tier:
            day_t, _, month_t, _ = tier_keys(r.user, r.day, r.month)
            await self._adjust(day_t, delta)
            await self._adjust(month_t, delta)

    async def used(self, room: str, user: str, now: float) -> tuple[int, int]:
        day = day_of(now)
        r = await self._redis.get(room_key(room, day))
        u = await self._redis.get(user_key(user, day)) if user else None
        return int(r or 0), int(u or 0)
