"""The Redis quota store against a real redis-server on an ephemeral loopback
port: reserve and settle, both scopes refused with the documented error, a
refused user gives the room's tokens back, concurrent reservations never
overshoot, and it answers like the memory store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from llm_agents.quota import DAY, MemoryQuotaStore, QuotaLimits
from llm_agents.quota_redis import RedisQuotaStore, room_key
from tests.redisserver import RedisServer
from wire.errors import QuotaExceeded


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis (tests/integration/conftest.py), in a database of
    this module's own: these tests flush it and list its keys."""
    return f"redis://127.0.0.1:{redis_server.port}/3"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(redis_url)
    await c.flushdb()
    yield c
    await c.aclose()


async def test_reserve_settle_and_refusals(client: aioredis.Redis) -> None:
    store = RedisQuotaStore(client, QuotaLimits(room_per_day=100, user_per_day=50))
    r = await store.reserve("room", "bob", 40, 10.0)
    await store.settle(r, 15)
    assert await store.used("room", "bob", 10.0) == (15, 15)
    with pytest.raises(QuotaExceeded) as info:
        await store.reserve("room", "bob", 40, 11.0)
    assert info.value.extra["scope"] == "user" and info.value.spec.http_status == 429
    # The refused user's reservation gave the room's tokens back.
    assert await store.used("room", "bob", 11.0) == (15, 15)
    await store.reserve("room", "ann", 40, 12.0)
    with pytest.raises(QuotaExceeded) as info:
        await store.reserve("room", "cid", 50, 13.0)
    assert info.value.extra["scope"] == "room"
    assert info.value.extra["retry_after"] == round(DAY - 13.0)
    # Keys carry hash tags (Cluster-safe) and expire.
    assert 0 < await client.ttl(room_key("room", 0)) <= 2 * 86400
    # Another day starts from zero.
    await store.reserve("room", "bob", 50, DAY + 1.0)


async def test_concurrent_reservations_never_overshoot(client: aioredis.Redis,
                                                       redis_url: str) -> None:
    # Two "processes" (two clients) racing for the same room's last tokens.
    other = aioredis.from_url(redis_url)
    try:
        a = RedisQuotaStore(client, QuotaLimits(room_per_day=1000, user_per_day=0))
        b = RedisQuotaStore(other, QuotaLimits(room_per_day=1000, user_per_day=0))

        async def take(store: RedisQuotaStore, user: str) -> int:
            try:
                await store.reserve("hot", user, 30, 5.0)
                return 1
            except QuotaExceeded:
                return 0

        got = await asyncio.gather(*(take(a if i % 2 else b, f"u{i}") for i in range(100)))
        assert sum(got) == 1000 // 30
        room, _ = await a.used("hot", "", 5.0)
        assert room == 30 * (1000 // 30)
    finally:
        await other.aclose()


async def test_answers_like_the_memory_store(client: aioredis.Redis) -> None:
    limits = QuotaLimits(room_per_day=300, user_per_day=120)
    mem, red = MemoryQuotaStore(limits), RedisQuotaStore(client, limits)
    ops = [("a", 60, 30), ("b", 80, 80), ("a", 70, 10), ("c", 50, 0), ("a", 40, 40),
           ("b", 45, 20), ("c", 100, 100), ("b", 30, 30), ("a", 20, 25)]
    for user, want, used in ops:
        outcomes = []
        for store in (mem, red):
            try:
                r = await store.reserve("room", user, want, 7.0)
                await store.settle(r, used)
                outcomes.append("ok")
            except QuotaExceeded as err:
                outcomes.append(err.extra["scope"])
        assert outcomes[0] == outcomes[1], (user, want, outcomes)
        assert await mem.used("room", user, 7.0) == await red.used("room", user, 7.0)


async def test_serve_keeps_its_quotas_in_redis(redis_url: str, client: aioredis.Redis,
                                               make_server, http) -> None:
    srv = make_server("--agent-backend", "scripted", "--agent-word-delay", "0",
                      "--quota-redis", redis_url, "--quota-user-per-day", "400")
    url = f"{srv.url}/v1/rooms/demo/agents/quinn/interactions"
    headers = {"Authorization": f"Bearer {srv.token('rhea')}"}
    statuses = []
    for _ in range(8):
        async with http.post(url, json={"text": "hi"}, headers=headers) as r:
            statuses.append(r.status)
            if r.status == 429:
                assert (await r.json())["scope"] == "user"
                break
    assert statuses[0] == 202 and statuses[-1] == 429
    keys = {k.decode() for k in await client.keys("quota:*")}
    assert any(k.startswith("quota:{user:rhea}:") for k in keys), keys
    assert any(k.startswith("quota:{room:demo}:") for k in keys), keys


async def test_tiers_in_redis_answer_like_the_memory_store(client: aioredis.Redis) -> None:
    """Tier budgets (tokens and requests, per day and per month) counted in
    Redis, refused with the same fields as the memory store, across the
    turn of a day that is not the turn of the month."""
    import calendar

    from llm_agents.quota import TierLimits

    now = calendar.timegm((2026, 3, 30, 23, 0, 0, 0, 0, 0))
    tiers = {"free": TierLimits(tokens_per_day=100, requests_per_day=2, tokens_per_month=150,
                                requests_per_month=100),
             "pro": TierLimits(tokens_per_day=1000)}
    limits = QuotaLimits(0, 10, tiers, "free")

    async def run(store: object) -> list[object]:
        out: list[object] = []
        for user, tokens, at, tier in (("ann", 10, now, ""), ("ann", 10, now, "free"),
                                       ("ann", 10, now, "gold"), ("bob", 500, now, "pro"),
                                       ("cid", 90, now, ""), ("cid", 30, now, ""),
                                       ("cid", 60, now + 2 * 3600, "")):
            try:
                r = await store.reserve("room", user, tokens, at, tier)  # type: ignore[attr-defined]
                if user == "cid" and tokens == 90:
                    await store.settle(r, 80)  # type: ignore[attr-defined]
                out.append(("ok", r.tier))
            except QuotaExceeded as err:
                out.append({k: err.extra[k] for k in ("tier", "period", "unit", "limit")})
        return out

    redis_answers = await run(RedisQuotaStore(client, limits))
    assert redis_answers == await run(MemoryQuotaStore(limits))
    assert redis_answers[2] == {"tier": "free", "period": "day", "unit": "requests", "limit": 2}
    assert redis_answers[3] == ("ok", "pro")
    assert redis_answers[5] == {"tier": "free", "period": "day", "unit": "tokens", "limit": 100}
    # The next day, the month's 150 tokens: 80 + 60 fit, the day is new.
    assert redis_answers[6] == ("ok", "free")
    refused = await run(RedisQuotaStore(client, limits))  # the same day again: all spent
    assert refused[0] == {"tier": "free", "period": "day", "unit": "requests", "limit": 2}
