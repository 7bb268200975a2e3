"""Sanctions on Redis (standalone or Cluster): one hash per room and kind,
``lr:ban:{<room>}`` and ``lr:mute:{<room>}`` (the room is the hash tag, so
both keys of a room share a slot), a field per user whose value is the
msgpack of ``Sanction.pack`` (its ``until`` inside).

Expired entries are ignored on read and deleted when seen (``get``,
``list``) and before a full room refuses a new one; the bound of entries
per room and kind is checked in a script, so that edges racing each other
cannot pass it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from room_router.moderation import (
    KINDS,
    MAX_SANCTIONS_PER_ROOM,
    Sanction,
    over_bound,
)
from storage.redis_conn import RedisClient, register_script, room_key, unavailable_when_down

if TYPE_CHECKING:
    from room_router.moderation import Sanctions

_WHAT = "moderation store"

# KEYS[1]: the room's hash of that kind; ARGV[1]: user, ARGV[2]: value,
# ARGV[3]: the bound. 1 stored, 0 refused (full and the user not in it).
_PUT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
   and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def sanction_key(kind: str, room: str) -> str:
    return room_key(kind, room)


class RedisSanctions:
    def __init__(self, client: RedisClient, max_per_room: int = MAX_SANCTIONS_PER_ROOM) -> None:
        # redis-py's stubs type the commands for sync and async at once.
        self._client: Any = cast(Any, client)
        self.max_per_room = max_per_room
        self._put = register_script(client, _PUT)

    async def put(self, sanction: Sanction, now: float) -> None:
        key = sanction_key(sanction.kind, sanction.room)
        args: list[str | bytes | int] = [sanction.user, sanction.pack(), self.max_per_room]
        with unavailable_when_down(_WHAT):
            if await self._put(keys=[key], args=args):
                return
            await self.list(sanction.room, sanction.kind, now)  # prunes the expired
            if await self._put(keys=[key], args=args):
                return
        raise over_bound(sanction.room, sanction.kind, self.max_per_room)

    async def remove(self, room: str, kind: str, user: str, now: float) -> bool:
        found = await self.get(room, kind, user, now)
        with unavailable_when_down(_WHAT):
            await self._client.hdel(sanction_key(kind, room), user)
        return found is not None

    async def get(self, room: str, kind: str, user: str, now: float) -> Sanction | None:
        key = sanction_key(kind, room)
        with unavailable_when_down(_WHAT):
            raw = await self._client.hget(key, user)
            if raw is None:
                return None
            found = Sanction.unpack(room, user, kind, raw)
            if found is None or not found.active(now):
                await self._client.hdel(key, user)
                return None
        return found

    async def list(self, room: str, kind: str, now: float) -> list[Sanction]:
        key = sanction_key(kind, room)
        with unavailable_when_down(_WHAT):
            raw = await self._client.hgetall(key)
            live: list[Sanction] = []
            stale: list[bytes] = []
            for field, value in raw.items():
                found = Sanction.unpack(room, field.decode(), kind, value)
                if found is None or not found.active(now):
                    stale.append(field)
                else:
                    live.append(found)
            if stale:
                await self._client.hdel(key, *stale)
        return sorted(live, key=lambda s: s.at)

    async def drop_room(self, room: str) -> None:
        with unavailable_when_down(_WHAT):
            for kind in KINDS:
                await self._client.delete(sanction_key(kind, room))


if TYPE_CHECKING:
    # mypy checks that the class keeps to the interface.
    def _is_sanctions(sanctions: RedisSanctions) -> Sanctions:
        return sanctions
