"""The node registry and the online counts on Redis (standalone or Cluster),
behind the protocols of ``room_router.nodes`` (read its docstring).

Node registry: two keys in the fixed slot ``{nodes}``: ``lr:{nodes}:exp``
(sorted set: node id scored by when its heartbeat expires) and
``lr:{nodes}:info`` (hash: node id -> its ``NodeInfo`` as JSON). A heartbeat
and a removal are one script each, so the two keys never disagree; ``live``
drops the expired nodes in the same script that reads the others. The
expiry times are the callers' ``now + ttl``: edges' clocks must agree to
well within a heartbeat period (NTP does that).

Online counts: per room, a hash ``lr:o:{room}``: node id -> ``count:expires``,
so a room's total is the sum of the unexpired fields (a dead node's report
stops counting at its expiry, and is deleted by the next ``totals`` of that
room). The hash expires ``ttl`` after its last report, so a room nobody
reports leaves nothing behind. A node's report replaces its previous one:
the rooms it reported last time and not now are set to 0 (their field
deleted); the list of rooms it reported is kept in ``lr:on:{n:<node>}`` so a
restarted process with the same node id cleans up after its predecessor.
The nodes that reported are a sorted set ``lr:{nodes}:online`` (node id
scored by its report's expiry), so ``rooms`` (the room listing) reads the
room lists of the unexpired reports and sums the listed rooms' hashes.

Both are rebuilt from the heartbeats after Redis lost its data: every live
node re-registers and re-reports within one heartbeat period.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from room_router.nodes import NodeInfo
from storage.redis_conn import (
    RedisClient,
    nodes_key,
    register_script,
    room_key,
    run_script_many,
    unavailable_when_down,
)

if TYPE_CHECKING:
    from room_router.nodes import NodeRegistry, OnlineCounts

# Commands per pipeline round trip.
_CHUNK = 500

# KEYS: exp, info. ARGV: node id, expires, info JSON.
_HEARTBEAT = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""

_REMOVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

# ARGV[1]: now. Expired nodes are deleted; the live ones' info answered in
# id order (ZRANGE orders equal scores by member, so sort by id here).
_LIVE = """
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, id in ipairs(dead) do
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
table.sort(ids)
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(ids))
"""

# KEYS[1]: a room's hash. ARGV[1]: now. Sums the unexpired reports, deletes
# the expired ones.
_ROOM_TOTAL = """
local fields = redis.call('HGETALL', KEYS[1])
local now = tonumber(ARGV[1])
local sum = 0
for i = 1, #fields, 2 do
    local v = fields[i + 1]
    local sep = string.find(v, ':', 1, true)
    local count, expires = tonumber(string.sub(v, 1, sep - 1)), tonumber(string.sub(v, sep + 1))
    if expires > now then sum = sum + count else redis.call('HDEL', KEYS[1], fields[i]) end
end
return sum
"""


def _info_json(node: NodeInfo) -> str:
    return json.dumps({"id": node.node_id, "group": node.group, "url": node.url,
                       "roles": list(node.roles)}, separators=(",", ":"))


def _info(raw: bytes | str) -> NodeInfo:
    d = json.loads(raw)
    return NodeInfo(d["id"], d["group"], d["url"], tuple(d["roles"]))


class RedisNodeRegistry:
    """``NodeRegistry`` on Redis (see the module docstring)."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self._keys = [nodes_key("exp"), nodes_key("info")]
        self._heartbeat = register_script(client, _HEARTBEAT)
        self._remove = register_script(client, _REMOVE)
        self._live = register_script(client, _LIVE)

    async def heartbeat(self, node: NodeInfo, ttl: float, now: float) -> None:
        with unavailable_when_down("node registry"):
            await self._heartbeat(keys=self._keys,
                                  args=[node.node_id, repr(now + ttl), _info_json(node)])

    async def remove(self, node_id: str) -> None:
        with unavailable_when_down("node registry"):
            await self._remove(keys=self._keys, args=[node_id])

    async def live(self, now: float) -> list[NodeInfo]:
        with unavailable_when_down("node registry"):
            raws = await self._live(keys=self._keys, args=[repr(now)])
        # A node removed between the two reads of the script cannot happen
        # (a script is atomic); None is only a defence.
        return [_info(r) for r in raws if r is not None]


def _node_rooms_key(node_id: str) -> str:
    return f"lr:on:{{n:{node_id}}}"


class RedisOnlineCounts:
    """``OnlineCounts`` on Redis (see the module docstring)."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self._room_total = register_script(client, _ROOM_TOTAL)

    async def report(self, node_id: str, counts: Mapping[str, int], ttl: float,
                     now: float) -> None:
        current = {room: c for room, c in counts.items() if c > 0}
        expires = repr(now + ttl)
        ttl_ms = max(1, int(ttl * 1000))
        mine = _node_rooms_key(node_id)
        with unavailable_when_down("online counts"):
            # (cast: redis-py types SMEMBERS for sync and async clients at once)
            members: set[Any] = await cast(Any, self.client).smembers(mine)
            previous = {_text(r) for r in members}
            ops: list[tuple[str, tuple[Any, ...]]] = []
            for room in previous - current.keys():
                ops.append(("hdel", (room_key("o", room), node_id)))
            for room, count in current.items():
                key = room_key("o", room)
                ops.append(("hset", (key, node_id, f"{count}:{expires}")))
                ops.append(("pexpire", (key, ttl_ms)))
            # The rooms reported, for the next report's clean-up (written
            # last: a report cut off half way is cleaned up by the next one
            # from the previous list, which is still there).
            ops.append(("delete", (mine,)))
            ops.append(("zadd", (nodes_key("online"), {node_id: now + ttl})))
            if current:
                ops.append(("sadd", (mine, *current)))
                ops.append(("pexpire", (mine, ttl_ms)))
            for i in range(0, len(ops), _CHUNK):
                pipe = self.client.pipeline(transaction=False)
                for name, args in ops[i:i + _CHUNK]:
                    getattr(pipe, name)(*args)
                await pipe.execute()

    async def totals(self, rooms: Iterable[str], now: float) -> dict[str, int]:
        rooms = list(dict.fromkeys(rooms))
        with unavailable_when_down("online counts"):
            sums = await run_script_many(self.client, self._room_total,
                                         [([room_key("o", room)], [repr(now)]) for room in rooms])
        return {room: int(total) for room, total in zip(rooms, sums, strict=True)}

    async def rooms(self, prefix: str, after: str, limit: int,
                    now: float) -> list[tuple[str, int]]:
        client: Any = self.client  # (redis-py types these for sync and async at once)
        with unavailable_when_down("online counts"):
            reporters = await client.zrangebyscore(nodes_key("online"), f"({now!r}", "+inf")
            await client.zremrangebyscore(nodes_key("online"), "-inf", repr(now))
            held: set[str] = set()
            for node in reporters:
                held |= {_text(r) for r in await client.smembers(_node_rooms_key(_text(node)))}
            ids = sorted(r for r in held if r.startswith(prefix) and r > after)
            page: list[tuple[str, int]] = []
            # A listed room may count 0 by now: read a few more than asked.
            while ids and len(page) < limit:
                batch, ids = ids[:limit], ids[limit:]
                totals = await self.totals(batch, now)
                page += [(r, totals[r]) for r in batch if totals[r] > 0]
        return page[:limit]


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


if TYPE_CHECKING:
    # mypy checks that the classes keep to the interfaces.
    def _is_a_node_registry(r: RedisNodeRegistry) -> NodeRegistry:
        return r

    def _is_online_counts(c: RedisOnlineCounts) -> OnlineCounts:
        return c
