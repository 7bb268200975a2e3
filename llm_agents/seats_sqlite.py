"""The seats in SQLite: the ``SeatStore`` of ``liveroom serve`` and of an
agents process without ``--redis`` (one process: nobody else writes the
file). The bounds are checked and the seat written in one ``BEGIN
IMMEDIATE`` transaction on the store's own thread."""

from __future__ import annotations

import time
from pathlib import Path

from llm_agents.seats import Seat, refusal
from storage.sqlite_thread import SqliteThread, immediate

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seats (
    room TEXT NOT NULL,
    character TEXT NOT NULL,
    added REAL NOT NULL,
    PRIMARY KEY (room, character)
);
"""


class SqliteSeatStore:
    def __init__(self, path: Path) -> None:
        # FULL: a seat is a promise made to the backend (201), and seats are
        # written rarely.
        self._sql = SqliteThread(path, "seat store", _SCHEMA, synchronous="FULL")
        # One writer (this process): a counter in memory is the version.
        self._version = 1

    async def open(self) -> None:
        await self._sql.open()

    def _all(self) -> list[Seat]:
        rows = self._sql.conn().execute(
            "SELECT room, character FROM seats ORDER BY room, character").fetchall()
        return [Seat(str(r[0]), str(r[1])) for r in rows]

    async def add(self, seat: Seat, per_room: int, capacity: int) -> bool:
        def add() -> bool:
            db = self._sql.conn()
            with immediate(db):
                err = refusal(seat, self._all(), per_room, capacity)
                if err is not None:
                    raise err
                n = db.execute("INSERT OR IGNORE INTO seats (room, character, added)"
                               " VALUES (?, ?, ?)", (seat.room, seat.character, time.time()))
                return bool(n.rowcount)
        added = await self._sql.run(add)
        self._version += added
        return added

    async def remove(self, seat: Seat) -> bool:
        n = await self._sql.run(lambda: self._sql.conn().execute(
            "DELETE FROM seats WHERE room = ? AND character = ?",
            (seat.room, seat.character)).rowcount)
        self._version += bool(n)
        return bool(n)

    async def version(self) -> int:
        return self._version

    async def seats(self) -> tuple[int, list[Seat]]:
        version = self._version
        return version, await self._sql.run(self._all)

    async def close(self) -> None:
        await self._sql.close()
