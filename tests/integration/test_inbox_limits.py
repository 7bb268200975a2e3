"""The peer inbox's chain (``prev``) and caps, the same on SQLite and on
PostgreSQL, and the upgrade of data stored by the previous release (an
SQLite file of the old schema; a PostgreSQL database migrated to 0004)."""

from __future__ import annotations

import shutil
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import msgpack
import pytest

from room_router.inbox import InboxCap, SqliteInbox
from room_router.inbox_postgres import PostgresInbox, open_postgres_inbox
from storage.migrations import MIGRATIONS_DIR, migrate
from tests.pgserver import PgServer
from wire.errors import ERROR_SPECS, InboxFull


def user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["sqlite", "postgres"])
async def inbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        ib: Any = SqliteInbox(tmp_path / "inbox.sqlite3")
        await ib.open()
    else:
        pg: PgServer = request.getfixturevalue("pg")
        ib = await open_postgres_inbox(await pg.create_database("lim"))
    yield ib
    await ib.close()


async def test_each_message_names_the_addressees_previous_one(inbox: Any) -> None:
    a, b, c = user(), user(), user()
    seqs: list[int] = []
    for i in range(5):
        m, _ = await inbox.append(b, a, "A", f"b-{i}", i, time.time())
        await inbox.append(c, a, "A", f"c-{i}", i, time.time())  # interleaved: not b's
        assert m.prev == (seqs[-1] if seqs else 0)
        seqs.append(m.seq)
    got = await inbox.pending(b, 0, 10)
    assert [(m.seq, m.prev) for m in got] == list(zip(seqs, [0, *seqs[:-1]], strict=True))
    # A retry answers the first message, its prev included.
    again, new = await inbox.append(b, a, "A", "b-3", "x", time.time())
    assert not new and (again.seq, again.prev) == (seqs[3], seqs[2])


async def test_a_cap_of_messages_refuses_the_next_new_one(inbox: Any) -> None:
    a, b = user(), user()
    cap = InboxCap(messages=3, bytes=1 << 20)
    stored = [(await inbox.append(b, a, "A", f"m-{i}", i, time.time(), cap))[0]
              for i in range(3)]
    with pytest.raises(InboxFull) as info:
        await inbox.append(b, a, "A", "m-3", 3, time.time(), cap)
    err = info.value
    assert err.extra == {"to": b, "limit": "messages", "max": 3}
    assert err.spec.temporary and err.spec.advice == "retry" and err.spec.http_status == 429
    assert [m.seq for m in await inbox.pending(b, 0, 10)] == [m.seq for m in stored]
    # A retry of a stored message is still answered: it adds nothing.
    again, new = await inbox.append(b, a, "A", "m-1", 1, time.time(), cap)
    assert not new and again.seq == stored[1].seq
    assert await inbox.unacked(b) == (3, 3)  # msgpack of 0, 1, 2: one byte each
    # An acknowledgement makes room.
    await inbox.ack(b, stored[0].seq)
    assert await inbox.unacked(b) == (2, 2)
    m3, new = await inbox.append(b, a, "A", "m-3", 3, time.time(), cap)
    assert new and m3.prev == stored[2].seq
    # Another user's inbox is not this one's.
    assert (await inbox.append(user(), a, "A", "m-0", 0, time.time(), cap))[1]


async def test_a_cap_of_bytes_counts_the_msgpack_bodies(inbox: Any) -> None:
    a, b = user(), user()
    body = "x" * 1000
    size = len(msgpack.packb(body))
    cap = InboxCap(messages=100, bytes=3 * size)
    for i in range(3):
        await inbox.append(b, a, "A", f"m-{i}", body, time.time(), cap)
    with pytest.raises(InboxFull) as info:
        await inbox.append(b, a, "A", "big", body, time.time(), cap)
    assert info.value.extra["limit"] == "bytes"
    with pytest.raises(InboxFull):  # not one byte more
        await inbox.append(b, a, "A", "small", None, time.time(), cap)
    assert await inbox.unacked(b) == (3, 3 * size)
    last = (await inbox.pending(b, 0, 10))[-1]
    await inbox.ack(b, last.seq)
    assert await inbox.unacked(b) == (0, 0)
    assert (await inbox.append(b, a, "A", "big", body, time.time(), cap))[1]


async def test_counters_that_drifted_are_recounted_before_a_refusal(inbox: Any) -> None:
    a, b = user(), user()
    cap = InboxCap(messages=2, bytes=1 << 20)
    await inbox.append(b, a, "A", "m-0", 0, time.time(), cap)
    # As if a crash (of an older release) had lost the ack's subtraction.
    if isinstance(inbox, SqliteInbox):
        await inbox._sql.run(lambda: inbox._sql.conn().execute(
            "UPDATE peer_cursor SET unacked_count = 50, unacked_bytes = 50 WHERE user = ?", (b,)))
    else:
        await inbox.pool.execute("UPDATE peer_cursor SET unacked_count = 50,"
                                 " unacked_bytes = 50 WHERE user_id = $1", b)
    assert (await inbox.append(b, a, "A", "m-1", 1, time.time(), cap))[1]
    assert await inbox.unacked(b) == (2, 2)
    with pytest.raises(InboxFull):
        await inbox.append(b, a, "A", "m-2", 2, time.time(), cap)


# --------------------------------------------------------------------------
# Data of the previous release
# --------------------------------------------------------------------------
_OLD_SQLITE = """
CREATE TABLE peer_inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, to_user TEXT NOT NULL,
    from_user TEXT NOT NULL, from_name TEXT NOT NULL, client_id TEXT NOT NULL,
    body BLOB NOT NULL, ts REAL NOT NULL);
CREATE UNIQUE INDEX peer_inbox_dedupe ON peer_inbox (from_user, to_user, client_id);
CREATE INDEX peer_inbox_to ON peer_inbox (to_user, seq);
CREATE TABLE peer_cursor (user TEXT PRIMARY KEY, acked_upto INTEGER NOT NULL);
"""


def _old_rows() -> list[tuple[str, str, str, bytes]]:
    """(to, from, id, body): b, c, b, b, c; b acknowledged its first."""
    return [(to, "a", f"{to}-{i}", msgpack.packb("x" * (i + 1)))
            for i, to in enumerate(["b", "c", "b", "b", "c"])]


async def test_an_sqlite_file_of_the_old_schema_is_upgraded_once(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(_OLD_SQLITE)
    for to, sender, cid, body in _old_rows():
        db.execute("INSERT INTO peer_inbox (to_user, from_user, from_name, client_id, body, ts)"
                   " VALUES (?, ?, 'A', ?, ?, ?)", (to, sender, cid, body, time.time()))
    db.execute("INSERT INTO peer_cursor VALUES ('b', 1)")
    db.commit()
    db.close()
    for _ in range(2):  # the second open finds it upgraded and changes nothing
        ib = SqliteInbox(path)
        await ib.open()
        try:
            assert [(m.seq, m.prev) for m in await ib.pending("b", 0, 10)] == [(3, 1), (4, 3)]
            assert [(m.seq, m.prev) for m in await ib.pending("c", 0, 10)] == [(2, 0), (5, 2)]
            assert await ib.unacked("b") == (2, 3 + 4 + 2)  # msgpack: 1-byte header each
            assert await ib.unacked("c") == (2, 2 + 5 + 2)
            assert await ib.acked_upto("b") == 1
        finally:
            await ib.close()
    ib = SqliteInbox(path)
    await ib.open()
    try:
        m, new = await ib.append("b", "a", "A", "b-new", 1, time.time())
        assert new and m.prev == 4
    finally:
        await ib.close()


async def test_migration_0005_fills_prev_and_the_counters_of_stored_data(
        pg: PgServer, tmp_path: Path) -> None:
    dsn = await pg.create_database("mig")
    old = tmp_path / "migrations-0004"
    old.mkdir()
    for f in MIGRATIONS_DIR.glob("000[1-4]_*.sql"):
        shutil.copy(f, old / f.name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, old)
        seqs = []
        for to, sender, cid, body in _old_rows():
            seqs.append(await conn.fetchval(
                "SELECT o_seq FROM peer_append($1, $2, 'A', $3, $4, 1.0)", to, sender, cid, body))
        await conn.execute("INSERT INTO peer_cursor VALUES ('b', $1)", seqs[0])
        assert 5 in await migrate(conn)
    finally:
        await conn.close()
    ib: PostgresInbox = await open_postgres_inbox(dsn)
    try:
        b = [(m.seq, m.prev) for m in await ib.pending("b", 0, 10)]
        assert b == [(seqs[2], seqs[0]), (seqs[3], seqs[2])]
        assert [m.prev for m in await ib.pending("c", 0, 10)] == [0, seqs[1]]
        assert await ib.unacked("b") == (2, 3 + 4 + 2)
        assert await ib.unacked("c") == (2, 2 + 5 + 2)
        # The old function (a process of the previous release) keeps them right.
        await ib.pool.execute("SELECT peer_append('b', 'a', 'A', 'old-proc', '\\x01'::bytea, 2.0)")
        assert await ib.unacked("b") == (3, 3 + 4 + 2 + 1)
        assert (await ib.pending("b", 0, 10))[-1].prev == seqs[3]
    finally:
        await ib.close()


def test_the_error_is_in_the_one_table() -> None:
    spec = ERROR_SPECS["inbox_full"]
    assert (spec.fault, spec.temporary, spec.advice, spec.http_status) == \
        ("client", True, "retry", 429)


async def test_the_embedded_inbox_syncs_every_commit_to_disk(tmp_path: Path) -> None:
    """Issue 12, item 9: an acknowledged peer message survives an OS crash or
    power loss, not only a process crash. SQLite's ``synchronous=FULL`` in WAL
    mode syncs the log at every commit (NORMAL, the old setting, only at
    checkpoints): the connection the inbox writes through must say 2 (FULL)."""
    ib = SqliteInbox(tmp_path / "inbox.sqlite3")
    await ib.open()
    try:
        mode, journal = await ib._sql.run(lambda: (
            ib._sql.conn().execute("PRAGMA synchronous").fetchone()[0],
            ib._sql.conn().execute("PRAGMA journal_mode").fetchone()[0]))
        assert (mode, journal) == (2, "wal")
    finally:
        await ib.close()
