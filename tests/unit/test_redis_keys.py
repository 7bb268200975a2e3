"""The Redis key scheme and client choice, without a server: the epoch
markers' slot tags, hash tags that keep a room's (or user's) keys in one
Cluster slot, and which client a URL makes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from state_versions.store_redis import slot_tags
from storage.redis_conn import nodes_key, open_redis, room_key, user_key
from wire.frames import ROOM_RE, USER_RE

ids = st.from_regex(ROOM_RE, fullmatch=True)


def test_slot_tags_cover_every_slot_once() -> None:
    tags = slot_tags()
    assert len(tags) == 16384
    assert [key_slot(f"lr:e:{{{t}}}".encode()) for t in tags] == list(range(16384))


def test_open_redis_picks_the_client_by_url() -> None:
    # Clients connect lazily (nothing listens on port 1, nothing to close).
    assert isinstance(open_redis("redis://127.0.0.1:1/0"), Redis)
    for url, kw in [("redis+cluster://127.0.0.1:1", {}),
                    ("redis://127.0.0.1:1", {"cluster": True})]:
        c = open_redis(url, **kw)  # type: ignore[arg-type]
        assert isinstance(c, RedisCluster)
    for bad in ["http://127.0.0.1:1", "127.0.0.1:6379", "nats://x"]:
        with pytest.raises(ValueError):
            open_redis(bad)


@given(ids, st.sampled_from(["t", "v", "d"]), st.sampled_from(["t", "v", "d"]))
def test_a_rooms_keys_share_one_slot(room: str, a: str, b: str) -> None:
    assert key_slot(room_key("s", room, a).encode()) == key_slot(room_key("s", room, b).encode())
    assert key_slot(room_key("o", room).encode()) == key_slot(room.encode())


@given(st.from_regex(USER_RE, fullmatch=True))
def test_a_users_keys_share_one_slot(user: str) -> None:
    assert key_slot(user_key("c", user).encode()) == \
        key_slot(f"{user_key('rl', user)}:some-room".encode())


def test_the_node_registry_keys_share_one_slot() -> None:
    assert key_slot(nodes_key("exp").encode()) == key_slot(nodes_key("info").encode())
