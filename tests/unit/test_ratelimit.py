from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from room_router.ratelimit import Rate, RateLimiter, TokenBucket

RATE = Rate(per_second=5.0, burst=10)


def test_burst_then_limited_then_refills() -> None:
    lim = RateLimiter(RATE)
    assert all(lim.check("u", "r", 0.0) == 0.0 for _ in range(10))
    wait = lim.check("u", "r", 0.0)
    assert 0.19 < wait <= 0.2  # one token at 5/s
    assert lim.check("u", "r", 0.2) == 0.0


def test_keys_are_independent_per_user_and_room() -> None:
    lim = RateLimiter(RATE)
    for _ in range(10):
        lim.check("u", "r1", 0.0)
    assert lim.check("u", "r1", 0.0) > 0
    assert lim.check("u", "r2", 0.0) == 0.0
    assert lim.check("v", "r1", 0.0) == 0.0


@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=200))
def test_never_more_than_burst_plus_rate_times_elapsed(gaps) -> None:
    bucket = TokenBucket(RATE.burst, 0.0)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        if bucket.take(RATE, now) == 0.0:
            allowed += 1
    assert allowed <= RATE.burst + RATE.per_second * now + 1e-9


def test_the_number_of_buckets_is_bounded() -> None:
    lim = RateLimiter(RATE, max_keys=100)
    for i in range(1000):
        lim.check(f"u{i}", "r", float(i) * 0.001)
    assert len(lim) <= 100
