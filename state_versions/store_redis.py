"""The hot state store: Redis (standalone or Cluster), one Lua script per
operation.

Theory of operation
-------------------
A room's state is three keys in one Cluster slot (hash tag ``{room}``):
``lr:s:{room}:t`` (the total), ``lr:s:{room}:v`` (hash: section -> partial)
and ``lr:s:{room}:d`` (hash: section -> msgpack value). ``apply`` is ONE
script: it reads the section's partial, checks the expected version
(compare-and-set), bumps partial and total and writes the value. Redis runs a
script alone, so applies from every edge process to one room are serialised:
totals go 1, 2, 3... with no gap or duplicate and ``total == sum(partials)``
at every step. Reads are scripts too, so a snapshot's total, versions and
values always belong together.

Values are msgpack (``use_bin_type``): ints up to 64 bits, floats, text,
bytes, lists and maps read back equal and of the same types, as from the
memory store.

The epoch, and what a client is told after Redis lost data
----------------------------------------------------------
Redis here is a cache-like hot tier: it may restart empty (no persistence),
or one Cluster master may. Versions counted before a loss and after it are
not comparable: after a loss a room starts again at total 0 (or, with the
durable tier, at what PostgreSQL had), so a client holding "total 7" must not
be told "you are up to date" by a room that has counted to 7 again with other
values. So every version carries an epoch, and the epoch changes whenever
Redis may have lost state:

- The epoch is a random string kept in Redis, once per slot: the *marker*
  ``lr:e:{<tag of slot s>}`` holds it for every slot ``s`` (on a standalone
  server the one key ``lr:e:{0}``). Every script also reads the marker of its
  room's slot (same slot, so Cluster allows it) and refuses to run when the
  marker is not the epoch this process holds.
- A missing marker means the slot's data is gone (a new Redis, a restarted
  master), since markers have no TTL and are written before any room. The
  process that notices it *renews* the epoch: compare-and-set of the
  canonical marker (slot 0's) from the old epoch to a new random one, then
  writes the new one into every slot's marker. Any other process meets a
  marker with another value, re-reads the canonical one and adopts it. Two
  processes renewing at once agree, because only one compare-and-set wins.
- ``self.epoch`` is therefore the current epoch of the whole store, and it
  changes at run time. A client keeps the epoch it got with its versions
  (``joined``/``state`` replies); when it presents an old epoch, the edge
  sends it every section (``state_versions`` semantics), never a diff
  against versions of another life. A pushed change after the renewal
  carries totals that restart lower, which the client sees as a gap, so it
  syncs and is then told the new epoch.
- Surviving slots keep their versions under the new epoch (a client resyncs
  in full once; that is the honest price of not knowing which slots were
  lost). Data in a lost slot is gone from this store; with
  ``state_versions.store_tiered`` it is reloaded from PostgreSQL.

Redis must not evict these keys (``maxmemory-policy noeviction`` or a
``volatile-*`` policy): an evicted marker reads as a loss (safe, a spurious
renewal); an evicted room without its marker would not be noticed.

Absent rooms and the loader
---------------------------
A ``loader`` (``async (room) -> Snapshot | None``) makes this store the hot
half of a two-tier store: when a script finds a room with no total key, it
answers "absent" instead of acting, the loader fetches the room's latest
state from the durable tier, and a load script writes it in (only if the
room is still absent: concurrent loaders agree).

Reads never allocate: a read of a room that neither Redis nor the loader
knows answers "empty" and writes nothing (so requests for made-up rooms
cost no memory; each costs the loader one read). Only a write of such a room
marks it as known-empty (total 0 with a TTL, ``EMPTY_TTL_S``) and then
applies, in the same script run as always.

Idle rooms (``idle_ttl``)
-------------------------
With the durable tier behind it, Redis need not keep rooms nobody uses: a
loaded room's keys expire ``idle_ttl`` seconds after the load, and a written
room's keys ``idle_ttl`` seconds after its last change was recorded in
PostgreSQL (``expire_if_current``: only if the room's total is still that
change's, so a room with a change not yet durable never expires). Every
apply removes the expiry. An expired room is absent: its next operation
reloads it from PostgreSQL with the same partials. Without a durable tier
(Redis alone) nothing expires: Redis is the only copy, and its memory is the
bound (``maxmemory`` with ``noeviction``: writes then fail, ``Unavailable``).

Sections per room
-----------------
The apply script counts the room's sections (``HLEN``) before it adds one:
a write that would make more than ``max_sections`` is refused in the same
atomic step, whatever the number of writing processes.
"""

from __future__ import annotations

import logging
import secrets
from binascii import crc_hqx
from collections.abc import Awaitable, Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

import msgpack
from redis.crc import key_slot

from state_versions.store import DEFAULT_MAX_SECTIONS
from state_versions.versions import Change, Section, Snapshot, too_many_sections
from storage.redis_conn import (
    RedisClient,
    is_cluster,
    register_script,
    room_key,
    unavailable_when_down,
)
from wire.errors import Unavailable, VersionConflict

if TYPE_CHECKING:
    from state_versions.store import StateStore

log = logging.getLogger(__name__)

SLOTS = 16384
# A room the durable tier does not know is remembered as empty this long.
EMPTY_TTL_S = 600
# How many times an operation re-runs after an epoch change or a load
# before giving up (each needs another process to interfere again).
_ATTEMPTS = 5

_WHAT = "state store"

Loader = Callable[[str], Awaitable[Snapshot | None]]

# Scripts answer {status, ...}: 1 done, 0 the marker is not our epoch
# (second element: the marker, '' when missing), 2 compare-and-set refused,
# 3 the room is absent and a loader should fill it, 4 the room has
# max_sections sections already.
_OK, _EPOCH, _CONFLICT, _ABSENT, _FULL = 1, 0, 2, 3, 4

_PRELUDE = """
local marker = redis.call('GET', KEYS[1])
if marker ~= ARGV[1] then return {0, marker or ''} end
local total = redis.call('GET', KEYS[2])
if not total and ARGV[2] == '1' then return {3} end
total = tonumber(total or '0')
"""

# KEYS: marker, total, versions, values. ARGV: epoch, use_loader, section,
# value, expected ('' for none), max sections. SET without EX and PERSIST
# take an idle room's expiry away: it is in use again.
_APPLY = _PRELUDE + """
local partial = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0')
if ARGV[5] ~= '' and tonumber(ARGV[5]) ~= partial then return {2, partial, total} end
if partial == 0 and redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[6]) then
    return {4, 0, total}
end
partial = partial + 1
total = total + 1
redis.call('SET', KEYS[2], total)
redis.call('HSET', KEYS[3], ARGV[3], partial)
redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
redis.call('PERSIST', KEYS[3])
redis.call('PERSIST', KEYS[4])
return {1, partial, total}
"""

# {1, total, versions (flat), values (flat, only when ARGV[3] is '1')}.
_READ_ALL = _PRELUDE + """
if ARGV[3] ~= '1' then return {1, total, redis.call('HGETALL', KEYS[3]), {}} end
return {1, total, redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4])}
"""

# The sections whose partial is not the known one (missing counts as 0).
# ARGV[3..]: known section, partial pairs. {1, total, {name, partial, value}...}
_CHANGED = _PRELUDE + """
local known = {}
for i = 3, #ARGV, 2 do known[ARGV[i]] = tonumber(ARGV[i + 1]) end
local versions = redis.call('HGETALL', KEYS[3])
local out = {}
for i = 1, #versions, 2 do
    local name, partial = versions[i], tonumber(versions[i + 1])
    if (known[name] or 0) ~= partial then
        out[#out + 1] = name
        out[#out + 1] = partial
        out[#out + 1] = redis.call('HGET', KEYS[4], name)
    end
end
return {1, total, out}
"""

# ARGV[3]: the section. {1, partial or false, value}
_SECTION = _PRELUDE + """
local partial = redis.call('HGET', KEYS[3], ARGV[3])
if not partial then return {1, 0} end
return {1, tonumber(partial), redis.call('HGET', KEYS[4], ARGV[3])}
"""

# The loader's result, written only if the room is still absent. ARGV[2]:
# total, ARGV[3]: the keys' TTL in ms ('0': none), ARGV[4..]: name,
# partial, value.
_LOAD = """
local marker = redis.call('GET', KEYS[1])
if marker ~= ARGV[1] then return {0, marker or ''} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {1, 0} end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('SET', KEYS[2], ARGV[2])
for i = 4, #ARGV, 3 do
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 2])
end
if ARGV[3] ~= '0' then
    for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
return {1, 1}
"""

# A room whose changes up to total ARGV[1] are durable expires in ARGV[2] ms,
# if that is still its total (a later change is not durable yet).
_EXPIRE_IF = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return 1
"""

# The canonical marker's compare-and-set: from ARGV[1] (or missing) to
# ARGV[2]; answers the value it holds afterwards.
_RENEW = """
local current = redis.call('GET', KEYS[1])
if not current or current == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2])
    return ARGV[2]
end
return current
"""

# A stale (not missing) slot marker catches up with the canonical epoch.
_RESTAMP = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) end
return redis.call('GET', KEYS[1]) or ''
"""


@cache
def slot_tags() -> tuple[str, ...]:
    """For each Cluster slot, a short string that hashes to it (the hash
    tag of that slot's epoch marker). Deterministic, computed once (about
    170,000 CRC16s, some tens of milliseconds)."""
    tags: list[str | None] = [None] * SLOTS
    missing, i = SLOTS, 0
    while missing:
        tag = str(i)
        slot = crc_hqx(tag.encode(), 0) % SLOTS
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        i += 1
    return tuple(t for t in tags if t is not None)


def _marker(tag: str) -> str:
    return f"lr:e:{{{tag}}}"


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _pairs(flat: list[bytes]) -> dict[str, bytes]:
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


class RedisStateStore:
    """``StateStore`` on Redis. Make it with ``await RedisStateStore.open(client)``
    (reads or creates the epoch). ``loader``: see the module docstring."""

    def __init__(self, client: RedisClient, epoch: str, *,
                 loader: Loader | None = None, max_sections: int = DEFAULT_MAX_SECTIONS,
                 idle_ttl: float | None = None) -> None:
        self.client = client
        self.epoch = epoch
        self.loader = loader
        self.max_sections = max_sections
        # Seconds a loaded or durable room stays once unused (module
        # docstring); None: keys never expire (Redis alone).
        self.idle_ttl = idle_ttl
        self._cluster = is_cluster(client)
        self._apply = register_script(client, _APPLY)
        self._read_all = register_script(client, _READ_ALL)
        self._changed = register_script(client, _CHANGED)
        self._section = register_script(client, _SECTION)
        self._load = register_script(client, _LOAD)
        self._expire_if = register_script(client, _EXPIRE_IF)
        self._renew = register_script(client, _RENEW)
        self._restamp = register_script(client, _RESTAMP)
        # How many times this process renewed or adopted an epoch (metrics, tests).
        self.epoch_changes = 0

    @classmethod
    async def open(cls, client: RedisClient, *, loader: Loader | None = None,
                   max_sections: int = DEFAULT_MAX_SECTIONS,
                   idle_ttl: float | None = None) -> RedisStateStore:
        store = cls(client, "", loader=loader, max_sections=max_sections, idle_ttl=idle_ttl)
        with unavailable_when_down(_WHAT):
            current = await client.get(store._canonical())
        if current is None:
            await store._renew_epoch()
        else:
            store.epoch = _text(current)
        return store

    # -- keys --------------------------------------------------------------
    def _canonical(self) -> str:
        return _marker(slot_tags()[0] if self._cluster else "0")

    def _keys(self, room: str) -> list[str]:
        total = room_key("s", room, "t")
        marker = (_marker(slot_tags()[key_slot(total.encode())]) if self._cluster
                  else self._canonical())
        return [marker, total, room_key("s", room, "v"), room_key("s", room, "d")]

    # -- the epoch ---------------------------------------------------------
    async def _renew_epoch(self) -> None:
        """Data was lost (or this is a new Redis): a new epoch, compare-and-set
        from ours, then every slot's marker set to the winner."""
        new = secrets.token_hex(8)
        with unavailable_when_down(_WHAT):
            won = (await self._renew(keys=[self._canonical()],
                                     args=[self.epoch, new])).decode()
            if self._cluster:
                pipe = self.client.pipeline(transaction=False)
                for tag in slot_tags():
                    pipe.set(_marker(tag), won)
                await pipe.execute()
        if not self.epoch:
            log.info("state epoch %s (%s)", won, "new" if won == new else "read")
            self.epoch = won
        elif won != self.epoch:
            log.warning("state epoch %s -> %s (%s)", self.epoch, won,
                        "renewed: Redis lost state" if won == new else "adopted")
            self.epoch = won
            self.epoch_changes += 1

    async def _on_epoch_mismatch(self, keys: list[str], marker: bytes) -> None:
        """A script refused to run: the slot's marker is missing (lost data:
        renew) or another value (adopt the canonical epoch, and bring a stale
        marker up to it)."""
        if not marker:
            await self._renew_epoch()
            return
        with unavailable_when_down(_WHAT):
            canonical = await self.client.get(self._canonical())
            if canonical is None:
                await self._renew_epoch()
                return
            if _text(canonical) != self.epoch:
                log.warning("state epoch %s -> %s (adopted)", self.epoch, _text(canonical))
                self.epoch = _text(canonical)
                self.epoch_changes += 1
            if marker.decode() != self.epoch:
                await self._restamp(keys=[keys[0]], args=[marker, self.epoch])

    async def _run(self, room: str, script: Any, *args: Any,
                   write: bool = False) -> list[Any] | None:
        """Run a room script; handle epoch changes and absent rooms, retry.
        None: a read of a room nobody has (nothing was written for it)."""
        keys = self._keys(room)
        for _ in range(_ATTEMPTS):
            with unavailable_when_down(_WHAT):
                reply: list[Any] = await script(
                    keys=keys, args=[self.epoch, "1" if self.loader else "0", *args])
            status = reply[0]
            if status == _EPOCH:
                await self._on_epoch_mismatch(keys, reply[1])
            elif status == _ABSENT:
                if not await self._fill(room, keys, write):
                    return None
            else:
                return reply
        raise Unavailable("the state store kept changing under this operation; retry")

    async def _fill(self, room: str, keys: list[str], write: bool) -> bool:
        """Load an absent room; False (and nothing written) when the loader
        does not know it and this is a read."""
        assert self.loader is not None
        snap = await self.loader(room)
        args: list[Any] = [self.epoch]
        if snap is None or not snap.sections:
            if not write:
                return False
            args += [0, EMPTY_TTL_S * 1000]
        else:
            # The total is the sum of the loaded partials, so the invariant
            # holds even if the durable tier missed a change (see
            # store_tiered: the epoch changed anyway). It came from the
            # durable tier, so it may expire once idle.
            args += [sum(s.partial for s in snap.sections.values()), self._idle_ms()]
            for s in snap.sections.values():
                args += [s.name, s.partial, _pack(s.value)]
        with unavailable_when_down(_WHAT):
            reply = await self._load(keys=keys, args=args)
        if reply[0] == _EPOCH:
            await self._on_epoch_mismatch(keys, reply[1])
        return True

    def _idle_ms(self) -> int:
        return 0 if self.idle_ttl is None else max(1, int(self.idle_ttl * 1000))

    async def expire_if_current(self, totals: Mapping[str, int]) -> None:
        """Each room of ``totals`` (room -> a total whose changes are all
        durable) expires after ``idle_ttl`` if that is still its total (see
        the module docstring). Off the fan-out path: the write-behind task
        calls this after each recorded batch."""
        if self.idle_ttl is None:
            return
        ttl = self._idle_ms()
        with unavailable_when_down(_WHAT):
            for room, total in totals.items():
                await self._expire_if(keys=self._keys(room)[1:], args=[total, ttl])

    # -- StateStore ----------------------------------------------------------
    async def apply(self, room: str, section: str, value: Any,
                    expected: int | None = None) -> Change:
        """As ``RoomState.apply``. ``value`` must pack as msgpack."""
        packed = _pack(value)  # before any I/O: a bad value changes nothing
        reply = await self._run(room, self._apply, section, packed,
                                "" if expected is None else str(expected),
                                self.max_sections, write=True)
        assert reply is not None  # a write always finds or makes the room
        if reply[0] == _FULL:
            raise too_many_sections(self.max_sections)
        partial, total = int(reply[1]), int(reply[2])
        if reply[0] == _CONFLICT:
            raise VersionConflict(
                f"section {section!r} is at version {partial}, not {expected}",
                section=section, current=partial, total=total)
        return Change(room, section, partial, total, value)

    async def versions(self, room: str) -> tuple[int, dict[str, int]]:
        # Versions only: the values (possibly large) stay in Redis.
        reply = await self._run(room, self._read_all, "0")
        if reply is None:
            return 0, {}
        return int(reply[1]), {k: int(v) for k, v in _pairs(reply[2]).items()}

    async def changed_since(self, room: str,
                            known: Mapping[str, int]) -> tuple[int, list[Section]]:
        args: list[Any] = []
        for name, partial in known.items():
            args += [name, partial]
        reply = await self._run(room, self._changed, *args)
        if reply is None:
            return 0, []
        flat = reply[2]
        out = [Section(flat[i].decode(), int(flat[i + 1]), _unpack(flat[i + 2]))
               for i in range(0, len(flat), 3)]
        out.sort(key=lambda s: s.name)
        return int(reply[1]), out

    async def section(self, room: str, section: str) -> Section | None:
        reply = await self._run(room, self._section, section)
        if reply is None or int(reply[1]) == 0:
            return None
        return Section(section, int(reply[1]), _unpack(reply[2]))

    async def snapshot(self, room: str) -> Snapshot:
        reply = await self._run(room, self._read_all, "1")
        if reply is None:
            return Snapshot(room, 0, {})
        versions, values = _pairs(reply[2]), _pairs(reply[3])
        return Snapshot(room, int(reply[1]), {
            name: Section(name, int(p), _unpack(values[name]))
            for name, p in sorted(versions.items())})


async def open_redis_store(url: str, *, loader: Loader | None = None,
                           max_sections: int = DEFAULT_MAX_SECTIONS) -> RedisStateStore:
    """Connect to ``url`` (``storage.redis_conn.open_redis``) and open
    the store on it."""
    from storage.redis_conn import open_redis

    return await RedisStateStore.open(open_redis(url), loader=loader,
                                      max_sections=max_sections)


if TYPE_CHECKING:
    # mypy checks that the class keeps to the interface.
    def _is_a_state_store(store: RedisStateStore) -> StateStore:
        return store
