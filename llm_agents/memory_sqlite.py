"""The characters' memory in SQLite: the ``MemoryStore`` of ``liveroom
serve`` and of an agents process without ``--redis``.

One row per record (room, character, user; ``""`` for the room's own
notes), its notes as JSON; ``updated`` is a column of its own so that the
bound on viewers per room (the least recently updated go first) and the
retention are plain indexed deletes. One worker thread runs every
statement (``storage.sqlite_thread``), so the event loop never waits on
the disk. ``NORMAL`` durability: a record survives a crash of the process;
the last lines may be lost with the machine, which costs a character a few
lines of memory, nothing anyone was promised.
"""

from __future__ import annotations

from pathlib import Path

from llm_agents.memory import Notes
from storage.sqlite_thread import SqliteThread, immediate

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agent_memory (
    room TEXT NOT NULL,
    character TEXT NOT NULL,
    user TEXT NOT NULL,
    data TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (room, character, user)
);
CREATE INDEX IF NOT EXISTS agent_memory_updated ON agent_memory (room, character, updated);
CREATE INDEX IF NOT EXISTS agent_memory_age ON agent_memory (updated);
"""


class SqliteMemoryStore:
    def __init__(self, path: Path) -> None:
        self._sql = SqliteThread(path, "memory store", _SCHEMA, synchronous="NORMAL")

    async def open(self) -> None:
        await self._sql.open()

    async def load(self, room: str, character: str, user: str) -> Notes | None:
        row = await self._sql.run(lambda: self._sql.conn().execute(
            "SELECT data FROM agent_memory WHERE room = ? AND character = ? AND user = ?",
            (room, character, user)).fetchone())
        return None if row is None else Notes.from_json(room, character, user, str(row[0]))

    async def save(self, notes: Notes, users_per_room: int) -> None:
        def save() -> None:
            db = self._sql.conn()
            with immediate(db):
                db.execute("INSERT INTO agent_memory (room, character, user, data, updated)"
                           " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room, character, user)"
                           " DO UPDATE SET data = excluded.data, updated = excluded.updated",
                           (notes.room, notes.character, notes.user, notes.to_json(),
                            notes.updated))
                if notes.user:
                    db.execute("DELETE FROM agent_memory WHERE rowid IN (SELECT rowid FROM"
                               " agent_memory WHERE room = ? AND character = ? AND user != ''"
                               " ORDER BY updated DESC LIMIT -1 OFFSET ?)",
                               (notes.room, notes.character, users_per_room))
        await self._sql.run(save)

    async def purge(self, updated_before: float) -> int:
        return int(await self._sql.run(lambda: self._sql.conn().execute(
            "DELETE FROM agent_memory WHERE updated < ?", (updated_before,)).rowcount))

    async def close(self) -> None:
        await self._sql.close()
