"""The connection registry on Redis (standalone or Cluster).

One sorted set per user, ``lr:c:{u:<user>}``: a member per connection,
``<cid>@<node>``, scored by the time it expires (Redis's clock: ``TIME`` in
the script, so edges with skewed clocks agree). An entry lives ``ttl``
seconds after it was added or last refreshed; ``nodes`` drops expired members
before answering, and the key itself expires with its newest member, so a
user whose every node died leaves nothing behind.

An edge keeps its entries alive with ``refresh(node, connections)`` on its
heartbeat (every ``ttl / 3`` seconds, say). That also rebuilds the registry
after Redis lost its data: within one heartbeat period every live edge has
re-asserted every connection it holds. A node that dies stops refreshing, and
its entries vanish ``ttl`` seconds later; until then peer deliveries to it
are published to a subject nobody reads, which costs nothing and loses
nothing (peer messages are in the inbox first).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from storage.redis_conn import (
    RedisClient,
    register_script,
    run_script_many,
    unavailable_when_down,
    user_key,
)

if TYPE_CHECKING:
    from room_router.registry import ConnectionRegistry

_WHAT = "connection registry"

# KEYS[1]: the user's set; ARGV[1]: ttl (seconds), ARGV[2..]: members.
_ADD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000))
return #ARGV - 1
"""

# Drops the expired members, answers the live ones.
_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def _member(node: str, cid: int) -> str:
    # The cid is an int, so the first '@' ends it whatever the node id holds.
    return f"{cid}@{node}"


def _node_of(member: bytes | str) -> str:
    text = member.decode() if isinstance(member, bytes) else member
    return text.split("@", 1)[1]


class RedisConnectionRegistry:
    """``ConnectionRegistry`` on Redis with expiry (see the module docstring)."""

    def __init__(self, client: RedisClient, *, ttl: float = 30.0) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.client = client
        self.ttl = ttl
        self._add = register_script(client, _ADD)
        self._live = register_script(client, _LIVE)

    async def add(self, user: str, node: str, cid: int) -> None:
        with unavailable_when_down(_WHAT):
            await self._add(keys=[user_key("c", user)], args=[self.ttl, _member(node, cid)])

    async def remove(self, user: str, node: str, cid: int) -> None:
        with unavailable_when_down(_WHAT):
            await self.client.zrem(user_key("c", user), _member(node, cid))

    async def nodes(self, user: str) -> set[str]:
        with unavailable_when_down(_WHAT):
            members = await self._live(keys=[user_key("c", user)])
        return {_node_of(m) for m in members}

    async def refresh(self, node: str, connections: Iterable[tuple[str, int]]) -> int:
        """Re-assert every (user, cid) that ``node`` holds, with a fresh
        expiry: the heartbeat's half of the registry. Pipelined, one script
        call per user (``run_script_many``). Returns the number of users refreshed."""
        by_user: dict[str, list[str]] = defaultdict(list)
        for user, cid in connections:
            by_user[user].append(_member(node, cid))
        calls = [([user_key("c", user)], [self.ttl, *members])
                 for user, members in by_user.items()]
        with unavailable_when_down(_WHAT):
            await run_script_many(self.client, self._add, calls)
        return len(calls)


if TYPE_CHECKING:
    # mypy checks that the class keeps to the interface.
    def _is_a_registry(registry: RedisConnectionRegistry) -> ConnectionRegistry:
        return registry
