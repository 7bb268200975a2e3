"""``PresenceStore`` on Redis: one hash per room, ``lr:p:{room}``, one field
per edge node holding that node's member list of the room.

A field's value is ``<written at>\\n<msgpack list of members>``, the time
being Redis' own (``TIME``, so the edges' clocks need not agree; the ``now``
arguments are not used here). An edge rewrites its field whole when its list
changes (once per tick at most) and re-asserts it periodically; a field
older than the TTL is a dead edge's: ``lists`` ignores and deletes it. The
key itself expires ``ttl`` seconds after its last write, so an abandoned
room's hash vanishes. Both scripts touch one key (Cluster-safe).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack

from room_router.presence import Member, valid_member
from storage.redis_conn import RedisClient, register_script, room_key, unavailable_when_down

if TYPE_CHECKING:
    from room_router.presence import PresenceStore

_WHAT = "presence store"

# KEYS[1]: the room's hash; ARGV: ttl (seconds), node, packed members ('' removes).
_PUT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[2])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[2], string.format('%.3f', now) .. '\\n' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000))
return 1
"""

# Prunes the stale fields, answers the live ones as node, value, node, value...
_LISTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local oldest = now - tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  local at = tonumber(string.match(all[i + 1], '^([^\\n]*)'))
  if at == nil or at < oldest then
    redis.call('HDEL', KEYS[1], all[i])
  else
    live[#live + 1] = all[i]
    live[#live + 1] = all[i + 1]
  end
end
return live
"""


def _key(room: str) -> str:
    return room_key("p", room)


def _members(value: bytes) -> list[Member]:
    _, _, packed = value.partition(b"\n")
    try:
        obj: Any = msgpack.unpackb(packed, raw=False)
    except Exception:
        return []
    return [m for m in obj if valid_member(m)] if isinstance(obj, list) else []


class RedisPresenceStore:
    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self._put = register_script(client, _PUT)
        self._lists = register_script(client, _LISTS)

    async def put(self, room: str, node: str, members: list[Member], now: float,
                  ttl: float) -> None:
        packed = msgpack.packb(members) if members else b""
        with unavailable_when_down(_WHAT):
            await self._put(keys=[_key(room)], args=[ttl, node, packed])

    async def lists(self, room: str, now: float, ttl: float) -> dict[str, list[Member]]:
        with unavailable_when_down(_WHAT):
            flat = await self._lists(keys=[_key(room)], args=[ttl])
        out: dict[str, list[Member]] = {}
        for i in range(0, len(flat) - 1, 2):
            node = flat[i].decode() if isinstance(flat[i], bytes) else str(flat[i])
            out[node] = _members(flat[i + 1])
        return out


if TYPE_CHECKING:
    def _is_a_store(store: RedisPresenceStore) -> PresenceStore:
        return store
