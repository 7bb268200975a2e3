"""The Redis quota store: token quotas shared by several agents processes.

Keys, one counter per scope and UTC day, each expiring two days after it was
last touched:

    quota:{room:<room>}:<day>     tokens charged to a room today
    quota:{user:<user>}:<day>     tokens charged to a user today

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

from llm_agents.quota import QuotaLimits, Reservation, day_of, seconds_to_next_day
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

    async def reserve(self, room: str, user: str, tokens: int, now: float,
                      tier: str = "") -> Reservation:
        # Tiers are kept in memory only (liveroom.gateway_flags refuses
        # --quota-tiers with Redis): ``tier`` is accepted, not counted.
        day = day_of(now)
        lim = self.limits
        retry = round(seconds_to_next_day(now))
        if not await self._reserve_one(room_key(room, day), tokens, lim.room_per_day):
            raise QuotaExceeded(f"the room's token quota of {lim.room_per_day} a day is used up",
                                scope="room", limit=lim.room_per_day, retry_after=retry)
        if user and not await self._reserve_one(user_key(user, day), tokens, lim.user_per_day):
            await self._adjust(room_key(room, day), -tokens)
            raise QuotaExceeded(f"your token quota of {lim.user_per_day} a day is used up",
                                scope="user", limit=lim.user_per_day, retry_after=retry)
        return Reservation(room, user, day, tokens)

    async def settle(self, reservation: Reservation, used: int) -> None:
        delta = used - reservation.tokens
        await self._adjust(room_key(reservation.room, reservation.day), delta)
        if reservation.user:
            await self._adjust(user_key(reservation.user, reservation.day), delta)

    async def used(self, room: str, user: str, now: float) -> tuple[int, int]:
        day = day_of(now)
        r = await self._redis.get(room_key(room, day))
        u = await self._redis.get(user_key(user, day)) if user else None
        return int(r or 0), int(u or 0)
