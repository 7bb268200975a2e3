"""The direct interactions in SQLite: the ``InteractionStore`` of
``liveroom serve`` and of an agents process without ``--postgres``.

One worker thread (``storage.sqlite_thread``, as the peer inbox) runs every
statement, so the event loop never waits on the disk; the service writes
each event here before it tells the SSE listeners, so a client that
reconnects (or asks after a restart) gets the whole stream from the store.
Interactions left running by a stopped process are marked failed
("interrupted") when the store opens again.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from storage.sqlite_thread import SqliteThread

_SCHEMA = """
CREATE TABLE IF NOT EXISTS interactions (
    id TEXT PRIMARY KEY,
    room TEXT NOT NULL,
    agent TEXT NOT NULL,
    user TEXT NOT NULL,
    text TEXT NOT NULL,
    status TEXT NOT NULL,
    reply TEXT NOT NULL DEFAULT '',
    error TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    created REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS interaction_events (
    interaction TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (interaction, seq)
);
"""

_COLUMNS = ("id", "room", "agent", "user", "text", "status", "reply", "error",
            "prompt_tokens", "completion_tokens", "created", "finished")


class SqliteInteractionStore:
    def __init__(self, path: Path) -> None:
        # NORMAL, not FULL: an interaction writes an event per streamed delta,
        # and an fsync each would cost more than the stream itself; what the
        # machine loses in a power cut is the tail of a stream that the next
        # start marks failed ("interrupted") anyway. Nothing here was
        # acknowledged to another user as stored (unlike the peer inbox).
        self._sql = SqliteThread(path, "interaction store", _SCHEMA, on_open=_fail_interrupted,
                                 synchronous="NORMAL")

    async def open(self) -> None:
        await self._sql.open()

    async def create(self, row: dict[str, Any]) -> None:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        await self._sql.run(lambda: self._sql.conn().execute(
            f"INSERT INTO interactions ({cols}) VALUES ({marks})", tuple(row.values())))

    async def add_event(self, interaction: str, seq: int, event: str, data: str) -> None:
        await self._sql.run(lambda: self._sql.conn().execute(
            "INSERT INTO interaction_events (interaction, seq, event, data) VALUES (?, ?, ?, ?)",
            (interaction, seq, event, data)))

    async def finish(self, interaction: str, status: str, reply: str, error: str | None,
                     prompt_tokens: int | None, completion_tokens: int | None,
                     finished: float) -> None:
        await self._sql.run(lambda: self._sql.conn().execute(
            "UPDATE interactions SET status = ?, reply = ?, error = ?, prompt_tokens = ?,"
            " completion_tokens = ?, finished = ? WHERE id = ?",
            (status, reply, error, prompt_tokens, completion_tokens, finished, interaction)))

    async def get(self, interaction: str) -> dict[str, Any] | None:
        row = await self._sql.run(lambda: self._sql.conn().execute(
            f"SELECT {', '.join(_COLUMNS)} FROM interactions WHERE id = ?",
            (interaction,)).fetchone())
        return None if row is None else dict(zip(_COLUMNS, row, strict=True))

    async def events_after(self, interaction: str, seq: int) -> list[tuple[int, str, str]]:
        rows = await self._sql.run(lambda: self._sql.conn().execute(
            "SELECT seq, event, data FROM interaction_events WHERE interaction = ? AND seq > ?"
            " ORDER BY seq", (interaction, seq)).fetchall())
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def purge(self, finished_before: float) -> int:
        def purge() -> int:
            db = self._sql.conn()
            db.execute("BEGIN")
            try:
                db.execute("DELETE FROM interaction_events WHERE interaction IN (SELECT id FROM"
                           " interactions WHERE status != 'running' AND finished < ?)",
                           (finished_before,))
                n = db.execute("DELETE FROM interactions WHERE status != 'running'"
                               " AND finished < ?", (finished_before,)).rowcount
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return int(n)
        return await self._sql.run(purge)

    async def close(self) -> None:
        await self._sql.close()


def _fail_interrupted(db: sqlite3.Connection) -> None:
    """Interactions that were running when the process stopped will never
    finish: say so instead of leaving them "running"."""
    db.execute("UPDATE interactions SET status = 'failed', error = 'interrupted'"
               " WHERE status = 'running'")
