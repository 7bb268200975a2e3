"""The characters' memory in Redis: the ``MemoryStore`` of agents processes
that share a cluster (``liveroom agents --redis``), so a character seated by
another process after a restart or a take-over remembers the same viewers.

Keys, all of one (room, character) in one slot (the ``{…}`` hash tag), so a
Redis Cluster works as well as one server and one script updates them
together:

    memory:{<room>:<character>}:n:<user>    a record's notes (JSON; user "" is the room's)
    memory:{<room>:<character>}:users       sorted set: viewer -> last update

Retention is Redis's own expiry: every record expires ``retention`` seconds
after its last update (none when the retention is 0), and the users index
expires with the room's last record. The bound on viewers per room is kept
by the save script: past it, the least recently updated viewers' records
are deleted. ``purge`` prunes the users index of expired members (the
records themselves are already gone).
"""

from __future__ import annotations

from typing import Any

from llm_agents.memory import Notes

# KEYS[1] record, KEYS[2] users index; ARGV: data, user, updated, bound,
# ttl (0: none), key prefix. Returns how many viewers were forgotten.
_SAVE = """
redis.call('SET', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[5])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
if ARGV[2] == '' then return 0 end
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[2])
if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over <= 0 then return 0 end
local old = redis.call('ZRANGE', KEYS[2], 0, over - 1)
for _, u in ipairs(old) do
  redis.call('DEL', ARGV[6] .. u)
  redis.call('ZREM', KEYS[2], u)
end
return over
"""


def scope(room: str, character: str) -> str:
    return f"memory:{{{room}:{character}}}"


class RedisMemoryStore:
    def __init__(self, client: Any, retention_s: float) -> None:
        self._redis = client
        self._ttl = int(retention_s)

    async def open(self) -> None:
        return None

    async def load(self, room: str, character: str, user: str) -> Notes | None:
        raw = await self._redis.get(f"{scope(room, character)}:n:{user}")
        if raw is None:
            return None
        data = raw.decode() if isinstance(raw, bytes) else str(raw)
        return Notes.from_json(room, character, user, data)

    async def save(self, notes: Notes, users_per_room: int) -> None:
        prefix = f"{scope(notes.room, notes.character)}:n:"
        await self._redis.eval(_SAVE, 2, prefix + notes.user,
                               f"{scope(notes.room, notes.character)}:users", notes.to_json(),
                               notes.user, notes.updated, users_per_room, self._ttl, prefix)

    async def purge(self, updated_before: float) -> int:
        """Expiry already forgot the records; drop their viewers from the
        indexes (scanned: an hourly job, one index per seated pair)."""
        n = 0
        async for key in self._redis.scan_iter(match="memory:*:users", count=200):
            n += int(await self._redis.zremrangebyscore(key, "-inf", f"({updated_before}"))
        return n

    async def close(self) -> None:
        return None
