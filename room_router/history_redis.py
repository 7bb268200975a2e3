"""Room history on Redis (standalone or Cluster), behind the protocol of
``room_router.history`` (read its docstring).

Per room, two keys in the room's slot (hash tag ``{<room>}``): a list
``lr:h:{room}`` of action ids, newest first, and a hash ``lr:h:{room}:e``:
action id -> ``<ts> <frame>`` (the stamp time as text, a space, the msgpack
frame). Append, trim and expiry are one script, so the two keys never
disagree: an id trimmed off the list leaves the hash in the same call.
Retract removes the id from both (``LREM`` over at most 1 000 ids). Both
keys expire ``ttl`` after the room's last append, so a room nobody writes to
leaves nothing behind; entries older than ``ttl`` are filtered on read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from room_router.history import Entry
from storage.redis_conn import RedisClient, register_script, room_key, unavailable_when_down

if TYPE_CHECKING:
    from room_router.history import HistoryStore

# KEYS: list, hash. ARGV: id, "<ts> <frame>", size, ttl in ms.
_APPEND = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local size = tonumber(ARGV[3])
while redis.call('LLEN', KEYS[1]) > size do
    redis.call('HDEL', KEYS[2], redis.call('RPOP', KEYS[1]))
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""

# KEYS: list, hash. ARGV: limit. The newest ``limit`` ids and their
# entries, newest first.
_RECENT = """
local ids = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ids == 0 then return {{}, {}} end
return {ids, redis.call('HMGET', KEYS[2], unpack(ids))}
"""

# KEYS: list, hash. ARGV: id. 1 when the room held it.
_RETRACT = """
redis.call('LREM', KEYS[1], 0, ARGV[1])
return redis.call('HDEL', KEYS[2], ARGV[1])
"""


def _keys(room: str) -> list[str]:
    return [room_key("h", room), room_key("h", room, "e")]


class RedisHistoryStore:
    """``HistoryStore`` on Redis (see the module docstring)."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self._append = register_script(client, _APPEND)
        self._recent = register_script(client, _RECENT)
        self._retract = register_script(client, _RETRACT)

    async def append(self, room: str, entry: Entry, size: int, ttl: float,
                     now: float) -> None:
        value = repr(entry.ts).encode() + b" " + entry.payload
        with unavailable_when_down("history"):
            await self._append(keys=_keys(room),
                               args=[entry.id, value, size, max(1, int(ttl * 1000))])

    async def recent(self, room: str, limit: int, ttl: float, now: float) -> list[Entry]:
        if limit <= 0:
            return []
        with unavailable_when_down("history"):
            ids, values = await self._recent(keys=_keys(room), args=[limit])
        since = now - ttl
        out: list[Entry] = []
        for action_id, raw in zip(reversed(ids), reversed(values), strict=True):
            if raw is None:
                continue  # a defence: the script reads both keys at once
            stamp, _, payload = bytes(raw).partition(b" ")
            ts = float(stamp)
            if ts >= since:
                out.append(Entry(_text(action_id), ts, payload))
        return out

    async def retract(self, room: str, action_id: str) -> bool:
        with unavailable_when_down("history"):
            return bool(await self._retract(keys=_keys(room), args=[action_id]))

    async def close(self) -> None:
        """The client is the caller's (shared with the other adapters)."""


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


if TYPE_CHECKING:
    def _is_a_history_store(s: RedisHistoryStore) -> HistoryStore:
        return s
