"""The peer inbox: durable until acknowledged.

Every peer message is appended here before it is delivered, so a message to
an offline user waits for them, and one to an online user that never arrives
(its connection dropped) is replayed on the next connect. Messages get a
sequence number (``seq``) that grows with each append; a user's messages are
delivered in ``seq`` order, and the user acknowledges with ``upto`` = the
highest ``seq`` it has processed (a cursor): everything up to it is done and
never delivered again.

A sender's retry with the same client message id (``id``) to the same
addressee is deduplicated:
the append answers the first message's ``seq`` and nothing is delivered twice.

``SqliteInbox`` is the embedded store: the stdlib ``sqlite3`` module on one
worker thread, so the event loop never waits for the disk. PostgreSQL
implements the same ``Inbox`` protocol in the distributed deployment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgpack

from room_router.sqlite_thread import SqliteThread

# Acknowledged messages are kept this long for deduplication of retries.
ACKED_RETENTION_S = 24 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS peer_inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    to_user TEXT NOT NULL,
    from_user TEXT NOT NULL,
    from_name TEXT NOT NULL,
    client_id TEXT NOT NULL,
    body BLOB NOT NULL,
    ts REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS peer_inbox_dedupe ON peer_inbox (from_user, to_user, client_id);
CREATE INDEX IF NOT EXISTS peer_inbox_to ON peer_inbox (to_user, seq);
CREATE TABLE IF NOT EXISTS peer_cursor (
    user TEXT PRIMARY KEY,
    acked_upto INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class PeerMessage:
    seq: int
    to: str
    sender: str
    sender_name: str
    id: str
    body: Any
    ts: float

    def to_frame(self) -> dict[str, Any]:
        return {"type": "peer", "seq": self.seq, "to": self.to,
                "from": {"id": self.sender, "name": self.sender_name},
                "id": self.id, "body": self.body, "ts": self.ts}


class Inbox(Protocol):
    async def append(self, to: str, sender: str, sender_name: str, client_id: str,
                     body: Any, ts: float) -> tuple[PeerMessage, bool]:
        """Store a message; returns it and whether it is new (False: a retry)."""

    async def pending(self, user: str, after: int, limit: int) -> list[PeerMessage]: ...

    async def ack(self, user: str, upto: int) -> None: ...

    async def close(self) -> None: ...


class SqliteInbox:
    def __init__(self, path: Path) -> None:
        self._sql = SqliteThread(path, "inbox", _SCHEMA)

    async def open(self) -> None:
        await self._sql.open()

    async def append(self, to: str, sender: str, sender_name: str, client_id: str,
                     body: Any, ts: float) -> tuple[PeerMessage, bool]:
        return await self._sql.run(self._append_sync, to, sender, sender_name, client_id,
                               msgpack.packb(body, use_bin_type=True), ts)

    def _append_sync(self, to: str, sender: str, sender_name: str, client_id: str,
                     body: bytes, ts: float) -> tuple[PeerMessage, bool]:
        db = self._sql.conn()
        cur = db.execute(
            "INSERT OR IGNORE INTO peer_inbox (to_user, from_user, from_name, client_id,"
            " body, ts) VALUES (?, ?, ?, ?, ?, ?)",
            (to, sender, sender_name, client_id, body, ts))
        new = cur.rowcount == 1
        row = db.execute(
            "SELECT seq, to_user, from_user, from_name, client_id, body, ts FROM peer_inbox"
            " WHERE from_user = ? AND to_user = ? AND client_id = ?",
            (sender, to, client_id)).fetchone()
        return _message(row), new

    async def pending(self, user: str, after: int, limit: int) -> list[PeerMessage]:
        return await self._sql.run(self._pending_sync, user, after, limit)

    def _pending_sync(self, user: str, after: int, limit: int) -> list[PeerMessage]:
        db = self._sql.conn()
        row = db.execute("SELECT acked_upto FROM peer_cursor WHERE user = ?",
                         (user,)).fetchone()
        floor = max(after, row[0] if row else 0)
        rows = db.execute(
            "SELECT seq, to_user, from_user, from_name, client_id, body, ts FROM peer_inbox"
            " WHERE to_user = ? AND seq > ? ORDER BY seq LIMIT ?",
            (user, floor, limit)).fetchall()
        return [_message(r) for r in rows]

    async def ack(self, user: str, upto: int) -> None:
        await self._sql.run(self._ack_sync, user, upto, time.time())

    def _ack_sync(self, user: str, upto: int, now: float) -> None:
        db = self._sql.conn()
        db.execute(
            "INSERT INTO peer_cursor (user, acked_upto) VALUES (?, ?)"
            " ON CONFLICT (user) DO UPDATE SET acked_upto = max(acked_upto, excluded.acked_upto)",
            (user, upto))
        db.execute("DELETE FROM peer_inbox WHERE to_user = ? AND seq <= ? AND ts < ?",
                   (user, upto, now - ACKED_RETENTION_S))

    async def acked_upto(self, user: str) -> int:
        row = await self._sql.run(lambda: self._sql.conn().execute(
            "SELECT acked_upto FROM peer_cursor WHERE user = ?", (user,)).fetchone())
        return int(row[0]) if row else 0

    async def close(self) -> None:
        await self._sql.close()


def _message(row: tuple[Any, ...]) -> PeerMessage:
    seq, to, sender, sender_name, client_id, body, ts = row
    return PeerMessage(int(seq), to, sender, sender_name, client_id,
                       msgpack.unpackb(body, raw=False), float(ts))
