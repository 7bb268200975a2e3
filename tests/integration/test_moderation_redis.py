"""``RedisSanctions`` on a real Redis, standalone and Cluster (the
``redis_client`` fixture runs each test on both): the semantics of the
memory store, the bound per room checked in a script, expired entries
pruned, garbage ignored, the key scheme (one hash per room and kind)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from room_router.moderation import BAN, MUTE, Sanction
from room_router.moderation_redis import RedisSanctions, sanction_key
from storage.redis_conn import RedisClient
from wire.errors import TooManySanctions

MOD = {"id": "m", "role": "moderator"}


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ban(room: str, user: str, until: float | None = None, at: float = 0.0) -> Sanction:
    return Sanction(room, user, BAN, until, "spam", MOD, at)


async def test_put_get_list_remove_and_expiry(redis_client: RedisClient) -> None:
    store, room = RedisSanctions(redis_client), uid("room")
    await store.put(ban(room, "a", until=100.0, at=1.0), now=0.0)
    await store.put(ban(room, "b", at=2.0), now=0.0)
    await store.put(Sanction(room, "a", MUTE, None, "", MOD, 3.0), now=0.0)
    got = await store.get(room, BAN, "a", now=50.0)
    assert got == ban(room, "a", until=100.0, at=1.0)
    assert [s.user for s in await store.list(room, BAN, now=50.0)] == ["a", "b"]
    assert [s.user for s in await store.list(room, MUTE, now=50.0)] == ["a"]
    # Expired: ignored and pruned from the hash.
    assert await store.get(room, BAN, "a", now=100.0) is None
    assert await redis_client.hkeys(sanction_key(BAN, room)) == [b"b"]  # type: ignore[misc]
    assert await store.remove(room, BAN, "b", now=0.0) is True
    assert await store.remove(room, BAN, "b", now=0.0) is False
    assert await store.list(room, BAN, now=0.0) == []


async def test_the_bound_is_kept_by_racing_writers_and_expired_ones_make_room(
        redis_client: RedisClient) -> None:
    store, room = RedisSanctions(redis_client, max_per_room=5), uid("room")
    results = await asyncio.gather(
        *(store.put(ban(room, f"u{i}", until=10.0 if i % 2 else None), now=0.0)
          for i in range(12)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, TooManySanctions)]
    assert len(refused) == 7 and len(await store.list(room, BAN, now=0.0)) == 5
    assert refused[0].extra == {"room": room, "limit": 5}
    with pytest.raises(TooManySanctions):
        await store.put(ban(room, "new"), now=5.0)
    await store.put(ban(room, (await store.list(room, BAN, 0.0))[0].user), now=5.0)


async def test_expired_entries_make_room_under_the_bound(redis_client: RedisClient) -> None:
    store, room = RedisSanctions(redis_client, max_per_room=2), uid("room")
    await store.put(ban(room, "timed", until=10.0), now=0.0)
    await store.put(ban(room, "forever"), now=0.0)
    with pytest.raises(TooManySanctions):
        await store.put(ban(room, "new"), now=9.0)
    await store.put(ban(room, "new"), now=10.0)
    assert {s.user for s in await store.list(room, BAN, 10.0)} == {"forever", "new"}


async def test_garbage_values_are_ignored_and_drop_room_forgets_the_room(
        redis_client: RedisClient) -> None:
    store, room, keep = RedisSanctions(redis_client), uid("room"), uid("keep")
    await redis_client.hset(sanction_key(BAN, room), "junk", b"\xc1")  # type: ignore[misc]
    await store.put(ban(room, "u"), now=0.0)
    await store.put(Sanction(room, "u", MUTE, None, "", MOD, 0.0), now=0.0)
    await store.put(ban(keep, "u"), now=0.0)
    assert [s.user for s in await store.list(room, BAN, now=0.0)] == ["u"]
    assert await store.get(room, BAN, "junk", now=0.0) is None
    await store.drop_room(room)
    assert await store.list(room, BAN, 0.0) == [] and await store.list(room, MUTE, 0.0) == []
    assert await store.get(keep, BAN, "u", 0.0) is not None
