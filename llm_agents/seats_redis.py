"""The seats in Redis (standalone or Cluster): the ``SeatStore`` every
agents process of a cluster shares (``liveroom agents --redis``).

Three keys in the fixed slot ``{seats}`` (so one script reads and writes
them all, on a Cluster too): ``lr:{seats}:all`` (hash: ``room/character``
-> when it was added), ``lr:{seats}:rooms`` (hash: room -> its number of
seats, for the per-room bound) and ``lr:{seats}:v`` (a counter bumped by
every change: each process polls it once a period and re-reads the seats
only when it moved). An add checks both bounds and writes in one script,
so two processes adding at once never pass a bound together. The seats
have no expiry: they are the backend's configuration, kept until removed.
"""

from __future__ import annotations

import time

from llm_agents.seats import Seat, too_many
from storage.redis_conn import RedisClient, register_script, unavailable_when_down

ALL = "lr:{seats}:all"
ROOMS = "lr:{seats}:rooms"
VERSION = "lr:{seats}:v"

# KEYS: all, rooms, version. ARGV: field, room, per_room, capacity, now.
# Returns 0 (there already), 1 (added), -1 (room full), -2 (capacity).
_ADD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') >= tonumber(ARGV[3]) then
    return -1
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return -2 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('INCR', KEYS[3])
return 1
"""

# KEYS: all, rooms, version. ARGV: field, room. Returns 1 if removed.
_REMOVE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
redis.call('INCR', KEYS[3])
return 1
"""

# KEYS: all, version. The version and the fields, read together.
_SEATS = """
return {redis.call('GET', KEYS[2]) or '0', redis.call('HKEYS', KEYS[1])}
"""


class RedisSeatStore:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._add = register_script(redis, _ADD)
        self._remove = register_script(redis, _REMOVE)
        self._seats = register_script(redis, _SEATS)

    async def open(self) -> None:
        return None

    async def add(self, seat: Seat, per_room: int, capacity: int) -> bool:
        with unavailable_when_down("seat store"):
            n = int(await self._add(keys=[ALL, ROOMS, VERSION],
                                    args=[seat.key, seat.room, per_room, capacity, time.time()]))
        if n == -1:
            raise too_many("room", per_room, seat.room)
        if n == -2:
            raise too_many("cluster", capacity, seat.room)
        return n == 1

    async def remove(self, seat: Seat) -> bool:
        with unavailable_when_down("seat store"):
            return bool(await self._remove(keys=[ALL, ROOMS, VERSION],
                                           args=[seat.key, seat.room]))

    async def version(self) -> int:
        with unavailable_when_down("seat store"):
            return int(await self._redis.get(VERSION) or 0)

    async def seats(self) -> tuple[int, list[Seat]]:
        with unavailable_when_down("seat store"):
            version, keys = await self._seats(keys=[ALL, VERSION])
        return int(version), sorted(Seat.from_key(_text(k)) for k in keys)

    async def close(self) -> None:
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
