"""The durable state store: PostgreSQL through asyncpg.

Tables (``storage/migrations/0001_init.sql``): ``rooms`` (the total version),
``sections`` (the latest value and partial version of each section),
``history`` (every applied change with its versions, kept) and ``meta``
(the epoch).

- **Atomic apply from many processes.** ``apply`` is one call of the
  ``state_apply`` SQL function: it locks the room's row, reads the section's
  partial, checks the expected version, then bumps the total, upserts the
  section and appends the history row, all in the one statement's
  transaction. The row lock serialises the applies of one room across every
  process, so totals go 1, 2, 3... with no gap or duplicate, and
  ``total == sum(partials)`` holds at every commit. One round trip per apply,
  and the lock is held only while the function runs. The same function
  counts the room's sections under that lock: a write that would make more
  than ``max_sections`` is refused (``TooManySections``) and leaves nothing.
- **Reads never allocate**: they are SELECTs; only an apply makes a row.
- **Reads are single statements**, so each sees one committed state: a
  snapshot's sections and its total always belong together.
- **Values are JSON** (the edge admits only values that JSON carries), kept
  as the text the store wrote, in ``json`` columns rather than ``jsonb``:
  ``jsonb`` rewrites numbers as decimals, so the float ``1e23`` would read back
  as the int ``100000000000000000000000`` (unequal in Python, too big for
  msgpack), and it refuses U+0000 in strings. A value reads back equal to
  what was written, with the same types, as from the memory store.
- **The epoch lives in the database** (made by the first migration), so it
  survives restarts of every process and changes only when the database is
  made anew.
- **An outage is ``Unavailable``** (the client may retry): the database is
  down or restarting. An apply cut off that way may or may not have been
  applied; a writer that cares retries with ``expected``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from state_versions.store import DEFAULT_MAX_SECTIONS
from state_versions.versions import Change, Section, Snapshot, too_many_sections
from storage.postgres import PoolAdapter, open_database
from wire.errors import VersionConflict

if TYPE_CHECKING:
    from state_versions.store import StateStore

# A partial or total outside PostgreSQL's bigint matches no stored version;
# it is passed as -1 (which none has) instead of failing to encode.
_BIGINT_MAX = 2**63 - 1

_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                                allow_nan=False).encode


def _bigint_or_never(v: int) -> int:
    return v if 0 <= v <= _BIGINT_MAX else -1


class PostgresStateStore(PoolAdapter):
    """``StateStore`` on a PostgreSQL database migrated by
    ``storage.migrations``. ``epoch`` is the database's: use
    ``await PostgresStateStore.from_pool(pool)`` or ``open_postgres_store``."""

    what = "state store"

    def __init__(self, pool: Any, epoch: str, *, owns_pool: bool = False,
                 max_sections: int = DEFAULT_MAX_SECTIONS) -> None:
        super().__init__(pool, owns_pool=owns_pool)
        self.epoch = epoch
        self.max_sections = max_sections

    @classmethod
    async def from_pool(cls, pool: Any, *, owns_pool: bool = False,
                        max_sections: int = DEFAULT_MAX_SECTIONS) -> PostgresStateStore:
        epoch = await pool.fetchval("SELECT value FROM meta WHERE key = 'epoch'")
        if epoch is None:
            raise RuntimeError("the database has no epoch: run storage.migrations first")
        return cls(pool, str(epoch), owns_pool=owns_pool, max_sections=max_sections)

    async def apply(self, room: str, section: str, value: Any,
                    expected: int | None = None) -> Change:
        """As ``RoomState.apply``. ``value`` must be JSON (ValueError or
        TypeError otherwise; the edge checks values at the door)."""
        row = await self._db(
            "fetchrow",
            "SELECT applied, over_cap, new_partial, new_total"
            " FROM state_apply($1, $2, $3::json, $4::bigint, $5::integer)",
            room, section, _encode_json(value),
            None if expected is None else _bigint_or_never(expected), self.max_sections)
        if row["over_cap"]:
            raise too_many_sections(self.max_sections)
        partial, total = int(row["new_partial"]), int(row["new_total"])
        if not row["applied"]:
            raise VersionConflict(
                f"section {section!r} is at version {partial}, not {expected}",
                section=section, current=partial, total=total)
        return Change(room, section, partial, total, value)

    async def versions(self, room: str) -> tuple[int, dict[str, int]]:
        rows = await self._db(
            "fetch", "SELECT r.total, s.section, s.partial FROM rooms r"
            " LEFT JOIN sections s ON s.room = r.room WHERE r.room = $1", room)
        if not rows:
            return 0, {}
        return (int(rows[0]["total"]),
                {r["section"]: int(r["partial"]) for r in rows if r["section"] is not None})

    async def changed_since(self, room: str,
                            known: Mapping[str, int]) -> tuple[int, list[Section]]:
        # The comparison runs in the database so that only outdated values
        # travel; a known section that the room does not have is ignored,
        # like a missing one counts as 0.
        names = list(known)
        rows = await self._db(
            "fetch", """
            SELECT r.total, c.section, c.partial, c.value
            FROM rooms r
            LEFT JOIN LATERAL (
                SELECT s.section, s.partial, s.value
                FROM sections s
                LEFT JOIN unnest($2::text[], $3::bigint[]) AS k(section, partial)
                    ON k.section = s.section
                WHERE s.room = r.room AND s.partial <> coalesce(k.partial, 0)
            ) c ON true
            WHERE r.room = $1
            """,
            room, names, [_bigint_or_never(known[n]) for n in names])
        if not rows:
            return 0, []
        # Name order, as RoomState.changed_since (Python's order, not the
        # database collation's).
        return int(rows[0]["total"]), sorted(
            (_section(r) for r in rows if r["section"] is not None), key=lambda s: s.name)

    async def section(self, room: str, section: str) -> Section | None:
        row = await self._db(
            "fetchrow",
            "SELECT section, partial, value FROM sections WHERE room = $1 AND section = $2",
            room, section)
        return None if row is None else _section(row)

    async def snapshot(self, room: str) -> Snapshot:
        rows = await self._db(
            "fetch", "SELECT r.total, s.section, s.partial, s.value FROM rooms r"
            " LEFT JOIN sections s ON s.room = r.room WHERE r.room = $1"
            " ORDER BY s.section", room)
        if not rows:
            return Snapshot(room, 0, {})
        return Snapshot(room, int(rows[0]["total"]),
                        {r["section"]: _section(r) for r in rows if r["section"] is not None})

    # -- beyond StateStore: the durable history ---------------------------
    async def snapshot_at(self, room: str, total: int) -> Snapshot | None:
        """The room as it was at ``total`` (rebuilt from the history); None
        if the room has not reached ``total`` yet."""
        if total < 0:
            return None
        rows = await self._db(
            "fetch", """
            SELECT r.total AS current, s.section, h.partial, h.value
            FROM rooms r
            LEFT JOIN sections s ON s.room = r.room
            LEFT JOIN LATERAL (
                SELECT h.partial, h.value FROM history h
                WHERE h.room = r.room AND h.section = s.section AND h.total <= $2
                ORDER BY h.total DESC LIMIT 1
            ) h ON true
            WHERE r.room = $1
            ORDER BY s.section
            """,
            room, min(total, _BIGINT_MAX))
        current = int(rows[0]["current"]) if rows else 0
        if total > current:
            return None
        return Snapshot(room, total,
                        {r["section"]: _section(r) for r in rows if r["partial"] is not None})

    async def record(self, changes: Sequence[Change]) -> tuple[int, int]:
        """Record changes another tier already applied and versioned (the
        write-behind of ``store_tiered``), in one statement. Returns
        (history rows written, changes skipped because their value is not
        JSON). Rows already there (a repeated batch) are kept as they are."""
        rooms: list[str] = []
        names: list[str] = []
        partials: list[int] = []
        totals: list[int] = []
        values: list[str] = []
        skipped = 0
        for c in changes:
            try:
                encoded = _encode_json(c.value)
            except (TypeError, ValueError):
                skipped += 1
                continue
            if not (0 < c.partial <= _BIGINT_MAX and 0 < c.total <= _BIGINT_MAX):
                skipped += 1
                continue
            rooms.append(c.room)
            names.append(c.section)
            partials.append(c.partial)
            totals.append(c.total)
            values.append(encoded)
        if not rooms:
            return 0, skipped
        written = await self._db(
            "fetchval", "SELECT state_record($1::text[], $2::text[], $3::bigint[],"
            " $4::bigint[], $5::json[])", rooms, names, partials, totals, values)
        return int(written), skipped

    async def history(self, room: str, after: int = 0, limit: int = 1000) -> list[Change]:
        """The changes applied to ``room`` after total ``after``, in order."""
        rows = await self._db(
            "fetch", "SELECT total, section, partial, value FROM history"
            " WHERE room = $1 AND total > $2 ORDER BY total LIMIT $3",
            room, max(0, min(after, _BIGINT_MAX)), limit)
        return [Change(room, r["section"], int(r["partial"]), int(r["total"]),
                       json.loads(r["value"])) for r in rows]


def _section(row: Any) -> Section:
    return Section(row["section"], int(row["partial"]), json.loads(row["value"]))


async def open_postgres_store(dsn: str, *, min_size: int = 2, max_size: int = 10,
                              max_sections: int = DEFAULT_MAX_SECTIONS) -> PostgresStateStore:
    """Connect, apply the pending migrations, and return a store that owns
    its pool (``close()`` closes it)."""
    pool = await open_database(dsn, min_size=min_size, max_size=max_size)
    try:
        return await PostgresStateStore.from_pool(pool, owns_pool=True,
                                                  max_sections=max_sections)
    except BaseException:
        await pool.close()
        raise


if TYPE_CHECKING:
    # mypy checks that the class keeps to the interface.
    def _is_a_state_store(store: PostgresStateStore) -> StateStore:
        return store
