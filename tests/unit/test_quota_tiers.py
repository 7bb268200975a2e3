"""Quota tiers (pure): tokens and requests, per day and per month, picked by
the token's tier claim, the default tier for an unknown one."""

from __future__ import annotations

import calendar

import pytest

from llm_agents.quota import QuotaBook, QuotaLimits, TierLimits, month_of, seconds_to_next_month
from wire.errors import QuotaExceeded

NOW = calendar.timegm((2026, 3, 31, 23, 0, 0, 0, 0, 0))
TIERS = {"free": TierLimits(tokens_per_day=100, requests_per_day=2, tokens_per_month=150,
                            requests_per_month=100),
         "pro": TierLimits(tokens_per_day=1000)}


def book() -> QuotaBook:
    return QuotaBook(QuotaLimits(0, 10, TIERS, "free"))


def test_requests_per_day_then_next_day() -> None:
    b = book()
    b.reserve("r", "ann", 10, NOW)
    b.reserve("r", "ann", 10, NOW, tier="free")
    with pytest.raises(QuotaExceeded) as err:
        b.reserve("r", "ann", 10, NOW)
    assert err.value.extra["tier"] == "free" and err.value.extra["unit"] == "requests"
    assert err.value.extra["period"] == "day" and err.value.extra["retry_after"] == 3600
    # An unknown tier claim is the default tier: the same user, the same counts.
    with pytest.raises(QuotaExceeded):
        b.reserve("r", "ann", 10, NOW, tier="gold")
    # The pro tier's limits are its own (and tokens over 10: not user_per_day).
    b.reserve("r", "bob", 500, NOW, tier="pro")


def test_tokens_per_month_outlive_the_day() -> None:
    b = book()
    r = b.reserve("r", "ann", 90, NOW)
    b.settle(r, 80)
    with pytest.raises(QuotaExceeded) as err:
        b.reserve("r", "ann", 30, NOW)  # 80 + 30 > 100 a day
    assert err.value.extra["period"] == "day" and err.value.extra["unit"] == "tokens"
    tomorrow = NOW + 3 * 3600  # April 1st: a new day and a new month
    b.reserve("r", "ann", 90, tomorrow)
    b2 = book()
    b2.reserve("r", "ann", 90, NOW - 86400)
    with pytest.raises(QuotaExceeded) as err:
        b2.reserve("r", "ann", 90, NOW)  # the day is new, the month is not: 180 > 150
    assert err.value.extra["period"] == "month"
    assert err.value.extra["retry_after"] == round(seconds_to_next_month(NOW)) == 3600


def test_without_tiers_the_user_limit_applies() -> None:
    b = QuotaBook(QuotaLimits(0, 10))
    with pytest.raises(QuotaExceeded) as err:
        b.reserve("r", "ann", 11, NOW, tier="pro")
    assert "tier" not in err.value.extra


def test_month_of() -> None:
    assert month_of(NOW) + 1 == month_of(NOW + 3600)
    assert seconds_to_next_month(calendar.timegm((2026, 12, 31, 0, 0, 0, 0, 0, 0))) == 86400
