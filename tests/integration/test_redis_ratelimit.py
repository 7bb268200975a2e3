"""The shared rate limit (a token bucket per user and room in Redis) on a
real standalone Redis and a real Cluster: one bucket across edges, per user
and room, refilling, failing open when Redis is gone; and two edge nodes
that share it refuse the actions past the limit with ``rate_limited``."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from edge.auth import mint_token
from edge.config import EdgeConfig
from edge.metrics import Metrics
from edge.node import EdgeNode
from room_router.bus import MemoryBus
from room_router.inbox import SqliteInbox
from room_router.ratelimit import Rate
from room_router.ratelimit_redis import RedisRateLimiter
from room_router.registry import MemoryConnectionRegistry
from state_versions.store import MemoryStateStore
from storage.redis_conn import RedisClient, open_redis
from tests.redisserver import RedisServer, eventually


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def test_one_bucket_across_edges_per_user_and_room(redis_client: RedisClient) -> None:
    rate = Rate(per_second=2.0, burst=4)
    edges = [RedisRateLimiter(redis_client, rate) for _ in range(3)]
    user, room = uid("user"), uid("room")
    waits = [await edges[i % 3].check(user, room) for i in range(10)]
    assert waits[:4] == [0.0] * 4
    assert all(0 < w <= 1 / rate.per_second + 0.05 for w in waits[4:]), waits
    # Another room, another user: buckets of their own.
    assert await edges[0].check(user, uid("room")) == 0.0
    assert await edges[1].check(uid("user"), room) == 0.0

    # The bucket refills at per_second (Redis's clock): allowed again soon.
    t0 = time.monotonic()

    async def allowed() -> bool:
        return await edges[2].check(user, room) == 0.0
    await eventually(allowed, timeout=3)
    assert time.monotonic() - t0 < 2


async def test_an_idle_bucket_expires(redis_client: RedisClient) -> None:
    limiter = RedisRateLimiter(redis_client, Rate(per_second=50.0, burst=2))
    user, room = uid("user"), uid("room")
    await limiter.check(user, room)
    key = f"lr:rl:{{u:{user}}}:{room}"
    assert 0 < await redis_client.pttl(key) <= 1100

    async def gone() -> bool:
        return await redis_client.exists(key) == 0
    await eventually(gone, timeout=3)


async def test_the_shared_limit_fails_open_when_redis_is_gone() -> None:
    with RedisServer() as srv:
        client = open_redis(srv.url)
        limiter = RedisRateLimiter(client, Rate(per_second=1.0, burst=1), timeout=0.5)
        try:
            user, room = uid("user"), uid("room")
            assert await limiter.check(user, room) == 0.0
            assert await limiter.check(user, room) > 0
            srv.stop()
            t0 = time.monotonic()
            assert await limiter.check(user, room) == 0.0
            assert time.monotonic() - t0 < 2
            assert limiter.failures == 1
        finally:
            await client.aclose()


def test_a_limit_that_refills_never_is_refused() -> None:
    with pytest.raises(ValueError):
        RedisRateLimiter(None, Rate(per_second=0, burst=1))  # type: ignore[arg-type]


class Capture:
    """A Sink that keeps what the node writes (WebSocket frames)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def buffered(self) -> int:
        return 0

    def close(self, code: int, reason: str) -> None:
        pass


async def test_two_edges_sharing_the_limit_refuse_actions_past_it(
        redis_client: RedisClient, tmp_path: Path) -> None:
    # Each edge alone would allow 3 (its local bucket); together only 3.
    rate = Rate(per_second=0.5, burst=3)
    config = EdgeConfig(action_rate=rate, coalesce_window=0)
    secret = "s" * 32
    user, room = uid("user"), uid("room")
    sinks, inboxes = [], []
    for i in range(2):
        inbox = SqliteInbox(tmp_path / f"inbox{i}.sqlite3")
        await inbox.open()
        inboxes.append(inbox)
        node = EdgeNode(node_id=f"n{i}", config=config, jwt_secret=secret,
                        store=MemoryStateStore(), bus=MemoryBus(),
                        registry=MemoryConnectionRegistry(), inbox=inbox, metrics=Metrics(),
                        shared_action_limiter=RedisRateLimiter(redis_client, rate))
        node.start()
        sink = Capture()
        conn, session = node.open(sink)
        token = mint_token(secret, user, "U", "viewer", time.time())
        for frame in [{"type": "hello", "v": 1, "token": token},
                      {"type": "join", "room": room},
                      *({"type": "action", "room": room, "kind": "comment",
                         "body": {"text": f"hi {i}.{j}"}} for j in range(3))]:
            await node.receive(conn, session, json.dumps(frame), "json")
        sinks.append(sink)
        await node.close(conn, session)
        node.stop()
    try:
        refused = [s.data.count(b'"code":"rate_limited"') for s in sinks]
        assert refused == [0, 3]
        assert sinks[0].data.count(b"hi 0.") == 3 and sinks[1].data.count(b"hi 1.") == 0
    finally:
        for inbox in inboxes:
            await inbox.close()
