"""The PostgreSQL pool every store on the database shares.

``open_database`` makes an asyncpg pool whose database has every migration
applied (``storage.migrations``); the state store, the peer inbox and the
characters' interactions can share it. ``PoolAdapter`` is what each of those
adapters has in common: one pool call at a time, with the database's outages
turned into ``Unavailable`` (a server error the client may retry).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from storage.migrations import MIGRATIONS_DIR, migrate
from wire.errors import Unavailable

log = logging.getLogger(__name__)


async def open_database(dsn: str, *, min_size: int = 2, max_size: int = 10,
                        directory: Path = MIGRATIONS_DIR, **pool_options: Any) -> Any:
    """An asyncpg pool on ``dsn`` whose database has every migration applied.
    The state store and the peer inbox can share it."""
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, **pool_options)
    try:
        await migrate(pool, directory)
    except BaseException:
        await pool.close()
        raise
    return pool


# The database is down, restarting or out of connections: the caller may
# retry later. (A lost connection may hide a committed write; the pool
# replaces dead connections, so the next call goes through once the server
# is back.) InternalClientError is here because asyncpg raises it, instead of
# ConnectionDoesNotExistError, for a query sent on a pooled connection whose
# server said "terminating connection" before the event loop read that; the
# stores only use connections through the pool, one query at a time, so it
# does not mean misuse here. Programming errors are not in this list.
_OUTAGES = (OSError, asyncpg.PostgresConnectionError, asyncpg.OperatorInterventionError,
            asyncpg.TooManyConnectionsError, asyncpg.InternalClientError)


@contextmanager
def unavailable_when_down(what: str) -> Iterator[None]:
    """Turn the database's outages into ``Unavailable`` (a server error the
    client may retry) inside the ``with``."""
    try:
        yield
    except _OUTAGES as err:
        log.warning("%s: the database is unavailable: %s", what, err)
        raise Unavailable(f"the {what} is unavailable; retry later") from err


class PoolAdapter:
    """What every adapter on the shared asyncpg pool has: ``_db`` runs one
    pool call and turns an outage into ``Unavailable`` (naming ``what``),
    and ``close`` closes the pool only if this adapter made it
    (``owns_pool``: the ``open_postgres_*`` helpers)."""

    what = "database"

    def __init__(self, pool: Any, *, owns_pool: bool = False) -> None:
        self.pool = pool
        self._owns_pool = owns_pool

    async def close(self) -> None:
        if self._owns_pool:
            await self.pool.close()

    async def _db(self, method: str, query: str, *args: Any) -> Any:
        """``pool.<method>(query, *args)``, outages raised as ``Unavailable``."""
        with unavailable_when_down(self.what):
            return await getattr(self.pool, method)(query, *args)
