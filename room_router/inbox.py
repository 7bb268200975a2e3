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

Gaps (theory of operation)
--------------------------
``seq`` is one counter for all users, so a user's seqs are not consecutive
and a missing message cannot be seen from the seqs alone. Each message
therefore records ``prev``: the highest seq of the addressee's messages
stored when it was appended, drawn in the same step as its own seq (one
SQLite thread here; the addressee's advisory lock in PostgreSQL), so a
user's messages form a chain ``0 <- prev <- seq``. An edge that has shown a
connection every message up to ``upto`` may show a live message ``m`` at once
only when ``m.prev <= upto < m.seq``: nothing of the user lies between. Any
other live copy is a gap (or a repeat), filled by reading the inbox from
``upto`` (``edge.peers.PeerDelivery``). A predecessor that is gone from the store was
acknowledged (only acknowledged messages are purged), so a ``prev`` lower
than the true predecessor never hides an unacknowledged message.

Caps (``InboxCap``)
-------------------
Each user's unacknowledged messages are counted (messages and msgpack body
bytes) beside the user's cursor: the append adds, the ack subtracts what
the cursor passes, both in the same transaction as the change they count.
An append that would take the addressee past the cap is refused with
``InboxFull`` before anything is stored. Counters that drifted (a crash of
an older release between two statements) cannot lock a user out: a refusal
first recounts the user's unacknowledged messages and corrects them.

``SqliteInbox`` is the embedded store: the stdlib ``sqlite3`` module on one
worker thread, so the event loop never waits for the disk. PostgreSQL
implements the same ``Inbox`` protocol in the distributed deployment.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgpack

from storage.sqlite_thread import SqliteThread, immediate
from wire.errors import InboxFull

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
    ts REAL NOT NULL,
    prev INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS peer_inbox_dedupe ON peer_inbox (from_user, to_user, client_id);
CREATE INDEX IF NOT EXISTS peer_inbox_to ON peer_inbox (to_user, seq);
CREATE TABLE IF NOT EXISTS peer_cursor (
    user TEXT PRIMARY KEY,
    acked_upto INTEGER NOT NULL,
    unacked_count INTEGER NOT NULL DEFAULT 0,
    unacked_bytes INTEGER NOT NULL DEFAULT 0
);
"""

_COLUMNS = "seq, to_user, from_user, from_name, client_id, body, ts, prev"


@dataclass(frozen=True, slots=True)
class PeerMessage:
    seq: int
    to: str
    sender: str
    sender_name: str
    id: str
    body: Any
    ts: float
    # The addressee's previous seq when this one was stored (see the module doc).
    prev: int = 0


@dataclass(frozen=True, slots=True)
class InboxCap:
    """The most one user may hold unacknowledged: messages, and bytes of
    their msgpack bodies."""

    messages: int
    bytes: int

    def refusal(self, count: int, size: int, body: int) -> str | None:
        """Why one more message of ``body`` bytes does not fit (None: it does)."""
        if count + 1 > self.messages:
            return "messages"
        if size + body > self.bytes:
            return "bytes"
        return None

    def error(self, to: str, which: str) -> InboxFull:
        limit = self.messages if which == "messages" else self.bytes
        return InboxFull(f"the inbox of {to} holds the most unacknowledged {which} it may "
                         f"({limit}); retry later", to=to, limit=which, max=limit)


class Inbox(Protocol):
    async def append(self, to: str, sender: str, sender_name: str, client_id: str,
                     body: Any, ts: float, cap: InboxCap | None = None
                     ) -> tuple[PeerMessage, bool]:
        """Store a message; returns it and whether it is new (False: a retry,
        answered even when the inbox is full). Raises ``InboxFull`` when a new
        message would take ``to`` past ``cap``."""

    async def pending(self, user: str, after: int, limit: int) -> list[PeerMessage]: ...

    async def ack(self, user: str, upto: int) -> None: ...

    async def close(self) -> None: ...


class SqliteInbox:
    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        # FULL: an append is on the disk (fsync of the WAL) before it is
        # acknowledged, so a peer_ack survives an OS crash or a power loss,
        # not only a crash of the process (docs/PROTOCOL.md, "The peer inbox").
        self._sql = SqliteThread(path, "inbox", _SCHEMA, on_open=_upgrade,
                                 synchronous=synchronous)

    async def open(self) -> None:
        await self._sql.open()

    async def append(self, to: str, sender: str, sender_name: str, client_id: str,
                     body: Any, ts: float, cap: InboxCap | None = None
                     ) -> tuple[PeerMessage, bool]:
        return await self._sql.run(self._append_sync, to, sender, sender_name, client_id,
                                   body, msgpack.packb(body, use_bin_type=True), ts, cap)

    def _append_sync(self, to: str, sender: str, sender_name: str, client_id: str,
                     body: Any, packed: bytes, ts: float, cap: InboxCap | None
                     ) -> tuple[PeerMessage, bool]:
        db = self._sql.conn()
        with immediate(db):
            row = db.execute(
                f"SELECT {_COLUMNS} FROM peer_inbox"
                " WHERE from_user = ? AND to_user = ? AND client_id = ?",
                (sender, to, client_id)).fetchone()
            if row is not None:
                return _message(row), False
            # Over the cap, the transaction still commits: it keeps a recount
            # that corrected the counters (_over_cap); the refusal follows.
            which = None if cap is None else _over_cap(db, to, cap, len(packed))
            if which is None:
                prev = db.execute(
                    "SELECT coalesce(max(seq), 0) FROM peer_inbox WHERE to_user = ?",
                    (to,)).fetchone()[0]
                cur = db.execute(
                    "INSERT INTO peer_inbox (to_user, from_user, from_name, client_id, body,"
                    " ts, prev) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (to, sender, sender_name, client_id, packed, ts, prev))
                db.execute(
                    "INSERT INTO peer_cursor (user, acked_upto, unacked_count, unacked_bytes)"
                    " VALUES (?, 0, 1, ?) ON CONFLICT (user) DO UPDATE SET"
                    " unacked_count = unacked_count + 1,"
                    " unacked_bytes = unacked_bytes + excluded.unacked_bytes",
                    (to, len(packed)))
        if which is not None:
            assert cap is not None
            raise cap.error(to, which)
        seq = cur.lastrowid
        assert seq is not None
        # The body as the caller gave it: the stored bytes are its encoding.
        return PeerMessage(seq, to, sender, sender_name, client_id, body, ts, int(prev)), True

    async def pending(self, user: str, after: int, limit: int) -> list[PeerMessage]:
        return await self._sql.run(self._pending_sync, user, after, limit)

    def _pending_sync(self, user: str, after: int, limit: int) -> list[PeerMessage]:
        db = self._sql.conn()
        row = db.execute("SELECT acked_upto FROM peer_cursor WHERE user = ?",
                         (user,)).fetchone()
        floor = max(after, row[0] if row else 0)
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM peer_inbox"
            " WHERE to_user = ? AND seq > ? ORDER BY seq LIMIT ?",
            (user, floor, limit)).fetchall()
        return [_message(r) for r in rows]

    async def ack(self, user: str, upto: int) -> None:
        await self._sql.run(self._ack_sync, user, upto, time.time())

    def _ack_sync(self, user: str, upto: int, now: float) -> None:
        db = self._sql.conn()
        upto = max(0, min(upto, _INT64_MAX))
        with immediate(db):
            row = db.execute("SELECT acked_upto FROM peer_cursor WHERE user = ?",
                             (user,)).fetchone()
            old = row[0] if row else 0
            if upto > old:
                # What the cursor passes is no longer unacknowledged.
                n, size = db.execute(
                    "SELECT count(*), coalesce(sum(length(body)), 0) FROM peer_inbox"
                    " WHERE to_user = ? AND seq > ? AND seq <= ?", (user, old, upto)).fetchone()
                db.execute(
                    "INSERT INTO peer_cursor (user, acked_upto) VALUES (?, ?)"
                    " ON CONFLICT (user) DO UPDATE SET acked_upto = excluded.acked_upto,"
                    " unacked_count = max(0, unacked_count - ?),"
                    " unacked_bytes = max(0, unacked_bytes - ?)",
                    (user, upto, n, size))
            db.execute("DELETE FROM peer_inbox WHERE to_user = ? AND seq <= ? AND ts < ?",
                       (user, upto, now - ACKED_RETENTION_S))

    async def acked_upto(self, user: str) -> int:
        row = await self._sql.run(lambda: self._sql.conn().execute(
            "SELECT acked_upto FROM peer_cursor WHERE user = ?", (user,)).fetchone())
        return int(row[0]) if row else 0

    async def unacked(self, user: str) -> tuple[int, int]:
        """(messages, body bytes) the user has not acknowledged, as counted."""
        row = await self._sql.run(lambda: self._sql.conn().execute(
            "SELECT unacked_count, unacked_bytes FROM peer_cursor WHERE user = ?",
            (user,)).fetchone())
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def close(self) -> None:
        await self._sql.close()


_INT64_MAX = 2**63 - 1


def _over_cap(db: sqlite3.Connection, to: str, cap: InboxCap, body: int) -> str | None:
    """Which part of ``cap`` one more message would pass (None: it fits).
    Over by the counters: recount before refusing (and correct them)."""
    row = db.execute("SELECT unacked_count, unacked_bytes FROM peer_cursor WHERE user = ?",
                     (to,)).fetchone()
    count, size = (row[0], row[1]) if row else (0, 0)
    if cap.refusal(count, size, body) is None:
        return None
    count, size = db.execute(
        "SELECT count(*), coalesce(sum(length(body)), 0) FROM peer_inbox WHERE to_user = ?"
        " AND seq > coalesce((SELECT acked_upto FROM peer_cursor WHERE user = ?), 0)",
        (to, to)).fetchone()
    db.execute("UPDATE peer_cursor SET unacked_count = ?, unacked_bytes = ? WHERE user = ?",
               (count, size, to))
    return cap.refusal(count, size, body)


def _upgrade(db: sqlite3.Connection) -> None:
    """Bring a file made by an older release to this schema: ``prev`` on the
    messages and the unacknowledged counters on the cursors, computed from
    what is stored. Idempotent: it does nothing once the columns are there."""
    inbox = {r[1] for r in db.execute("PRAGMA table_info(peer_inbox)")}
    cursor = {r[1] for r in db.execute("PRAGMA table_info(peer_cursor)")}
    if "prev" in inbox and "unacked_count" in cursor:
        return
    with immediate(db):
        if "prev" not in inbox:
            db.execute("ALTER TABLE peer_inbox ADD COLUMN prev INTEGER NOT NULL DEFAULT 0")
            db.execute(
                "UPDATE peer_inbox SET prev = coalesce((SELECT max(p.seq) FROM peer_inbox p"
                " WHERE p.to_user = peer_inbox.to_user AND p.seq < peer_inbox.seq), 0)")
        if "unacked_count" not in cursor:
            db.execute("ALTER TABLE peer_cursor ADD COLUMN unacked_count INTEGER NOT NULL"
                       " DEFAULT 0")
            db.execute("ALTER TABLE peer_cursor ADD COLUMN unacked_bytes INTEGER NOT NULL"
                       " DEFAULT 0")
            db.execute(
                "INSERT INTO peer_cursor (user, acked_upto, unacked_count, unacked_bytes)"
                " SELECT m.to_user, 0, count(*), sum(length(m.body)) FROM peer_inbox m"
                " WHERE m.seq > coalesce((SELECT c.acked_upto FROM peer_cursor c"
                " WHERE c.user = m.to_user), 0) GROUP BY m.to_user"
                " ON CONFLICT (user) DO UPDATE SET unacked_count = excluded.unacked_count,"
                " unacked_bytes = excluded.unacked_bytes")


def _message(row: tuple[Any, ...]) -> PeerMessage:
    seq, to, sender, sender_name, client_id, body, ts, prev = row
    return PeerMessage(int(seq), to, sender, sender_name, client_id,
                       msgpack.unpackb(body, raw=False), float(ts), int(prev))
