"""Token-bucket rate limits, per key (user and room). Pure: time is an argument."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: int


class TokenBucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, burst: int, now: float) -> None:
        self.tokens = float(burst)
        self.stamp = now

    def take(self, rate: Rate, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens. Returns 0.0 when allowed, else the seconds to
        wait until the cost would be available."""
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(float(rate.burst), self.tokens + elapsed * rate.per_second)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / rate.per_second

    def charge(self, rate: Rate, now: float, cost: float) -> None:
        """Take ``cost`` tokens whatever is left: a cost known only after
        the work was done (the size of a reply). The bucket may go below
        zero; ``take`` then refuses until the debt has refilled."""
        self.take(rate, now, 0.0)  # refill up to now
        self.tokens -= cost


class RateLimiter:
    """Buckets by key, bounded in number: when ``max_keys`` is reached, the
    buckets that have refilled completely (idle keys) are forgotten, which is
    exactly as if they had never been used."""

    __slots__ = ("_buckets", "_full_after", "max_keys", "rate")

    def __init__(self, rate: Rate, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        # The longest time any bucket took to refill (rates may vary per call).
        self._full_after = rate.burst / rate.per_second

    def check(self, user: str, room: str, now: float, rate: Rate | None = None) -> float:
        """0.0 if allowed now, else the seconds to wait (``retry_after``).
        ``rate``: this key's rate when not the limiter's own (a room's)."""
        if rate is None:
            rate = self.rate
        key = (user, room)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_idle(now)
            bucket = self._buckets[key] = TokenBucket(rate.burst, now)
            if rate is not self.rate:
                self._full_after = max(self._full_after, rate.burst / rate.per_second)
        return bucket.take(rate, now)

    def _forget_idle(self, now: float) -> None:
        full_after = self._full_after
        idle = [k for k, b in self._buckets.items() if now - b.stamp >= full_after]
        for k in idle:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            # Every key is busy: drop the oldest half rather than grow without bound.
            oldest = sorted(self._buckets.items(), key=lambda kv: kv[1].stamp)
            for k, _ in oldest[: len(oldest) // 2]:
                del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)


class SharedRateLimiter(Protocol):
    """A limit shared by every edge (``room_router.ratelimit_redis``), checked
    by the edge after the local ``RateLimiter`` allowed a frame and before it
    publishes: 0.0 if allowed, else the seconds to wait."""

    async def check(self, user: str, room: str) -> float: ...
