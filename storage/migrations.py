"""Schema migrations for the PostgreSQL database: versioned SQL files applied
in order at start-up.

Theory of operation
-------------------
The schema is the files ``migrations/NNNN_name.sql`` next to this module; the
number is the version, applied in increasing order, each exactly once. The
database records what it has in ``schema_migrations`` (version, name, the
file's SHA-256, when).

Every process runs ``migrate`` when it starts. Each pending file runs in its
own transaction, together with its row in ``schema_migrations``, after taking
a transaction-scoped advisory lock: processes that start at once queue on the
lock, and each re-reads the applied versions once it holds it, so a file is
applied by the first one and seen as done by the others. A file fails as a
whole (PostgreSQL's DDL is transactional) and the files before it stay
applied.

A file that was applied and has changed since is an error: a migration is
changed by adding a new file, never by editing an old one. Versions in the
database that this code has no file for are left alone (a newer release
applied them; an older process still starting during a rolling deploy must
not fail).

Every store on PostgreSQL (the state store, the peer inbox, the
characters' interactions) shares one database and this one migration set,
so the files live here, on the floor below all of them, in one version
order; ``storage.postgres.open_database`` makes the pool they share,
migrated. ``python -m storage.migrations DSN`` applies the set ahead of a
deploy.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# The advisory lock every migrating process takes (advisory locks are per
# database, so this only serialises migrations of the same database).
LOCK_KEY = 0x6C69_7665_726F_6F6D  # b"liveroom"

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migration files or the database's record of them are inconsistent."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files of ``directory`` in version order. Other files
    are refused (a misnamed migration would otherwise be skipped quietly)."""
    found: list[Migration] = []
    for path in sorted(directory.iterdir()):
        if path.is_dir() or path.name.startswith("."):
            continue
        m = _FILE_RE.match(path.name)
        if m is None:
            raise MigrationError(f"{path}: migration files are named NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for a, b in pairwise(found):
        if a.version == b.version:
            raise MigrationError(f"two migrations with version {a.version}: {a.name}, {b.name}")
    return found


def pending(migrations: Sequence[Migration], applied: Mapping[int, str]) -> list[Migration]:
    """The migrations not yet applied, given ``applied`` = {version: checksum}."""
    todo: list[Migration] = []
    for m in migrations:
        done = applied.get(m.version)
        if done is None:
            todo.append(m)
        elif done != m.checksum:
            raise MigrationError(
                f"migration {m.version:04d}_{m.name} was applied and has changed since; "
                "add a new migration instead of editing an applied one")
    return todo


async def migrate(db: Any, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply the pending migrations of ``directory`` through ``db`` (an
    asyncpg pool or connection); returns the versions this call applied."""
    migrations = load_migrations(directory)
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await _migrate(conn, migrations)
    return await _migrate(db, migrations)


async def _migrate(conn: Any, migrations: list[Migration]) -> list[int]:
    done: list[int] = []
    while True:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
                await conn.execute(_CREATE_TABLE)
            rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
            todo = pending(migrations, {r["version"]: r["checksum"] for r in rows})
            if not todo:
                return done
            m = todo[0]
            try:
                await conn.execute(m.sql)
            except asyncpg.PostgresError as err:
                raise MigrationError(f"migration {m.version:04d}_{m.name} failed: {err}") from err
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                m.version, m.name, m.checksum)
            done.append(m.version)



async def _main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m storage.migrations DSN", file=sys.stderr)
        return 2
    conn = await asyncpg.connect(argv[0])
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print(f"applied {applied}" if applied else "up to date")
    return 0


if __name__ == "__main__":
    import asyncio

    sys.exit(asyncio.run(_main(sys.argv[1:])))
