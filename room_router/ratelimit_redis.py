"""Rate limits shared by every edge: a token bucket per (user, room) in Redis.

Why two limiters. The local ``room_router.ratelimit.RateLimiter`` runs inside the
session, synchronously, for free; but it only sees the connections of one
edge, so a user with connections on three edges gets three buckets. This one
is the same token bucket (same ``Rate``) kept in Redis, so the limit holds
across edges. The edge checks the local bucket first (a flood is refused
without a round trip), then this one, and only then publishes the action.

Where the await is. The check awaits one Redis round trip on the path of the
sender's own frame, before anything is published; the fan-out path (bus ->
hub -> connections) never waits for it. The round trip has a deadline
(``timeout``); when Redis is slow or down the check *fails open* (allows,
and counts ``failures``): the local bucket still holds each edge to the
limit, and a rate limiter must not take rooms down with Redis.

The bucket: a hash ``lr:rl:{u:<user>}:<room>`` with ``tokens`` and ``stamp``,
refilled at ``per_second`` up to ``burst`` and timed by Redis's clock
(``TIME``), so edges with skewed clocks share one bucket correctly. It
expires once it would be full again, so idle buckets cost nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from room_router.ratelimit import Rate
from storage.redis_conn import RedisClient, register_script, unavailable_when_down, user_key
from wire.errors import Unavailable

if TYPE_CHECKING:
    from room_router.ratelimit import SharedRateLimiter

log = logging.getLogger(__name__)

# KEYS[1]: the bucket. ARGV: per_second, burst, cost. Answers the seconds to
# wait as a string (0 when allowed; Lua numbers would be truncated to ints).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens, stamp = tonumber(b[1]), tonumber(b[2])
if not tokens then tokens, stamp = burst, now end
if now > stamp then
    tokens = math.min(burst, tokens + (now - stamp) * rate)
    stamp = now
end
local wait = 0
if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(stamp))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisRateLimiter:
    """``SharedRateLimiter``: a token bucket per (user, room) in Redis."""

    def __init__(self, client: RedisClient, rate: Rate, *, timeout: float = 0.25) -> None:
        if rate.per_second <= 0 or rate.burst < 1:
            raise ValueError("a shared limit needs per_second > 0 and burst >= 1")
        self.client = client
        self.rate = rate
        self.timeout = timeout
        self._take = register_script(client, _TAKE)
        self.failures = 0  # checks that failed open (metrics, tests)
        self._last_log = -60.0

    async def check(self, user: str, room: str, cost: float = 1.0) -> float:
        """0.0 if allowed now, else the seconds to wait. Fails open."""
        key = f"{user_key('rl', user)}:{room}"
        try:
            with unavailable_when_down("rate limiter"):
                reply = await asyncio.wait_for(
                    self._take(keys=[key], args=[self.rate.per_second, self.rate.burst, cost]),
                    self.timeout)
        except (Unavailable, TimeoutError) as err:
            self.failures += 1
            now = time.monotonic()
            if now - self._last_log >= 60:
                self._last_log = now
                log.warning("shared rate limit unavailable (%s): allowing; the local limit "
                            "still applies (%d failures so far)", err, self.failures)
            return 0.0
        return float(reply)


if TYPE_CHECKING:
    # mypy checks that the class keeps to the interface.
    def _is_shared(limiter: RedisRateLimiter) -> SharedRateLimiter:
        return limiter
