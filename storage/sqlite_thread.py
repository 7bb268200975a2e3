"""A SQLite file owned by one worker thread, for the embedded deployment's
durable stores (the peer inbox, the characters' interactions).

sqlite3 objects are used from the thread that made them, and one writer at a
time is what SQLite wants: so one thread owns the connection, and the event
loop never waits for the disk (``run`` hands it a function and awaits).

Durability is the caller's choice (``synchronous``), because what a store
promises differs: in WAL mode ``FULL`` syncs the log at every commit, so a
committed write survives an OS crash or a power loss; ``NORMAL`` syncs only
at checkpoints, so the last commits survive a crash of the process but may
be lost with the machine. There is no default: each store says which it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_SYNCHRONOUS = frozenset({"FULL", "NORMAL"})


class SqliteThread:
    def __init__(self, path: Path, name: str, schema: str,
                 on_open: Callable[[sqlite3.Connection], None] | None = None, *,
                 synchronous: str) -> None:
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}")
        self._synchronous = synchronous
        self._path = path
        self._name = name
        self._schema = schema
        self._on_open = on_open
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Create the file and its schema (WAL, autocommit), then ``on_open``."""
        await self.run(self._open_sync)

    def _open_sync(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        db.executescript(self._schema)
        if self._on_open is not None:
            self._on_open(db)
        self._db = db

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the owning thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def conn(self) -> sqlite3.Connection:
        """The connection, from inside a function given to ``run``."""
        if self._db is None:
            raise RuntimeError(f"{self._name} is not open")
        return self._db

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await self.run(db.close)
        self._pool.shutdown(wait=True)


@contextlib.contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on an autocommit connection: ``BEGIN IMMEDIATE``
    (the write lock from the start, so a read-then-write cannot be raced),
    committed when the block ends, even by ``return``; rolled back if it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
