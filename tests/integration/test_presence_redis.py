"""The Redis presence store (room_router/presence_redis.py) on a real Redis,
standalone and Cluster: one hash per room, a field per edge, stale fields
ignored and pruned, the key's expiry."""

from __future__ import annotations

import uuid

from room_router.presence_redis import RedisPresenceStore
from storage.redis_conn import RedisClient, room_key
from tests.support import until


def m(user: str, role: str = "viewer") -> dict[str, str]:
    return {"id": user, "name": user.upper(), "role": role}


async def test_lists_per_edge_and_removal(redis_client: RedisClient) -> None:
    store = RedisPresenceStore(redis_client)
    room = f"rp-{uuid.uuid4().hex[:8]}"
    await store.put(room, "e1", [m("a"), m("b", "host")], 0.0, 30.0)
    await store.put(room, "e2", [m("a")], 0.0, 30.0)
    assert await store.lists(room, 0.0, 30.0) == {"e1": [m("a"), m("b", "host")],
                                                  "e2": [m("a")]}
    ttl_ms = await redis_client.pttl(room_key("p", room))
    assert 0 < ttl_ms <= 30_000  # an abandoned room's hash vanishes
    await store.put(room, "e1", [], 0.0, 30.0)
    assert await store.lists(room, 0.0, 30.0) == {"e2": [m("a")]}
    assert await store.lists(f"{room}-none", 0.0, 30.0) == {}


async def test_a_field_not_reasserted_goes_stale_and_is_pruned(
        redis_client: RedisClient) -> None:
    store = RedisPresenceStore(redis_client)
    room = f"rp-{uuid.uuid4().hex[:8]}"
    key = room_key("p", room)
    await store.put(room, "dead", [m("z")], 0.0, 30.0)
    await store.put(room, "live", [m("y")], 0.0, 30.0)

    async def only_live() -> bool:
        await store.put(room, "live", [m("y")], 0.0, 30.0)  # re-asserted
        return await store.lists(room, 0.0, 0.3) == {"live": [m("y")]}

    await until(only_live, 5, "the dead edge's field goes stale")
    assert await redis_client.hkeys(key) == [b"live"]  # pruned, not just ignored


async def test_a_garbled_field_yields_no_members(redis_client: RedisClient) -> None:
    store = RedisPresenceStore(redis_client)
    room = f"rp-{uuid.uuid4().hex[:8]}"
    await redis_client.hset(room_key("p", room), "odd", b"9999999999\n\xc1not msgpack")
    assert await store.lists(room, 0.0, 30.0) == {"odd": []}
