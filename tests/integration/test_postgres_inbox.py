"""The PostgreSQL peer inbox against a throwaway cluster: deduplication,
order, the acknowledgement cursor, the same behaviour as the SQLite inbox,
concurrent appends from several pools, and restarts of PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from room_router.inbox import ACKED_RETENTION_S, PeerMessage, SqliteInbox
from room_router.inbox_postgres import PostgresInbox, open_postgres_inbox
from storage.postgres import open_database
from tests.pgserver import PgServer


@pytest.fixture
async def inbox(dsn: str) -> AsyncIterator[PostgresInbox]:
    ib = await open_postgres_inbox(dsn)
    yield ib
    await ib.close()


def user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


async def test_a_retry_with_the_same_id_answers_the_first_message(
        inbox: PostgresInbox) -> None:
    a, b, c = user(), user(), user()
    first, new = await inbox.append(b, a, "Alice", "m-1", {"text": "hi", "raw": b"\x00\x01"}, 10.0)
    assert new and first.seq > 0
    assert first == PeerMessage(first.seq, b, a, "Alice", "m-1",
                                {"text": "hi", "raw": b"\x00\x01"}, 10.0)
    # The retry answers the first message (its body, name and time), not the retry's.
    again, new = await inbox.append(b, a, "Alice2", "m-1", {"text": "changed"}, 11.0)
    assert not new and again == first
    # The same client id from another sender, or to another addressee, is another message.
    other_sender, new1 = await inbox.append(b, c, "Carol", "m-1", "x", 12.0)
    other_to, new2 = await inbox.append(c, a, "Alice", "m-1", "y", 13.0)
    assert new1 and new2 and len({first.seq, other_sender.seq, other_to.seq}) == 3
    assert [m.id for m in await inbox.pending(b, 0, 10)] == ["m-1", "m-1"]


async def test_pending_is_in_seq_order_above_after_and_the_cursor(
        inbox: PostgresInbox) -> None:
    a, b, c = user(), user(), user()
    seqs = []
    for i in range(6):
        seqs.append((await inbox.append(b, a, "A", f"b-{i}", i, float(i)))[0].seq)
        await inbox.append(c, a, "A", f"c-{i}", i, float(i))  # another user's: never shown to b
    assert seqs == sorted(seqs)
    assert [m.seq for m in await inbox.pending(b, 0, 100)] == seqs
    assert [m.body for m in await inbox.pending(b, 0, 4)] == [0, 1, 2, 3]
    assert [m.body for m in await inbox.pending(b, seqs[3], 2)] == [4, 5]
    assert all(m.to == b for m in await inbox.pending(b, 0, 100))
    await inbox.ack(b, seqs[1])
    assert [m.body for m in await inbox.pending(b, 0, 100)] == [2, 3, 4, 5]
    # ``after`` below the cursor does not bring acknowledged messages back.
    assert [m.body for m in await inbox.pending(b, seqs[0], 100)] == [2, 3, 4, 5]
    assert [m.body for m in await inbox.pending(b, seqs[4], 100)] == [5]
    assert await inbox.pending(b, 2**70, 10) == []
    assert await inbox.pending(user(), 0, 10) == []


async def test_ack_is_a_cursor_that_only_moves_forward(inbox: PostgresInbox) -> None:
    a, b = user(), user()
    seqs = [(await inbox.append(b, a, "A", f"m-{i}", i, time.time()))[0].seq for i in range(4)]
    assert await inbox.acked_upto(b) == 0
    await inbox.ack(b, seqs[2])
    await inbox.ack(b, seqs[0])  # late, out-of-order ack: the cursor stays
    assert await inbox.acked_upto(b) == seqs[2]
    assert [m.seq for m in await inbox.pending(b, 0, 10)] == [seqs[3]]
    # Recent acknowledged messages are kept, so a late retry is still a retry.
    again, new = await inbox.append(b, a, "A", "m-0", "retry", time.time())
    assert not new and again.seq == seqs[0]
    assert [m.seq for m in await inbox.pending(b, 0, 10)] == [seqs[3]]
    await inbox.ack(b, 2**70)  # out of range: clamped, not an error
    assert await inbox.pending(b, 0, 10) == []


async def test_acknowledged_messages_are_purged_after_the_retention(
        inbox: PostgresInbox) -> None:
    a, b = user(), user()
    old_ts = time.time() - ACKED_RETENTION_S - 60
    old = (await inbox.append(b, a, "A", "old", 1, old_ts))[0]
    unacked_old = (await inbox.append(b, a, "A", "old-unacked", 2, old_ts))[0]
    recent = (await inbox.append(b, a, "A", "recent", 3, time.time()))[0]
    await inbox.ack(b, old.seq)
    count = await inbox.pool.fetchval(
        "SELECT count(*) FROM peer_inbox WHERE to_user = $1", b)
    assert count == 2  # the old acknowledged one is gone; unacknowledged ones stay
    assert [m.seq for m in await inbox.pending(b, 0, 10)] == [unacked_old.seq, recent.seq]
    # A retry after the purge is a new message (as in the SQLite inbox).
    again, new = await inbox.append(b, a, "A", "old", 1, time.time())
    assert new and again.seq > recent.seq


async def test_concurrent_retries_store_one_message(dsn: str) -> None:
    inboxes = [await open_postgres_inbox(dsn, min_size=5, max_size=5) for _ in range(2)]
    try:
        a, b = user(), user()
        results = await asyncio.gather(*(inboxes[i % 2].append(b, a, "A", "same", i, float(i))
                                         for i in range(20)))
        assert sum(new for _, new in results) == 1
        assert len({m.seq for m, _ in results}) == 1
        assert len(await inboxes[0].pending(b, 0, 100)) == 1
    finally:
        for ib in inboxes:
            await ib.close()


async def test_a_cursor_reader_never_skips_concurrent_appends(dsn: str) -> None:
    """Several pools append to one user while a reader pages with ``after`` =
    the last seq it saw and acknowledges as it goes: it sees every message,
    once, in order (a seq never commits after a higher one of the same user)."""
    writers = [await open_postgres_inbox(dsn, min_size=4, max_size=4) for _ in range(3)]
    reader = await open_postgres_inbox(dsn, min_size=1, max_size=1)
    try:
        b, n = user(), 300

        async def write() -> None:
            await asyncio.gather(*(writers[i % 3].append(b, f"s{i % 7}", "S", f"m-{i}", i,
                                                         float(i)) for i in range(n)))

        async def read() -> list[int]:
            seen: list[int] = []
            cursor = 0
            while len(seen) < n:
                batch = await reader.pending(b, cursor, 17)
                if not batch:
                    await asyncio.sleep(0.001)
                    continue
                seen += [m.seq for m in batch]
                cursor = batch[-1].seq
                await reader.ack(b, cursor)
            return seen

        _, seen = await asyncio.wait_for(asyncio.gather(write(), read()), 10)
        assert seen == sorted(seen) and len(set(seen)) == n
        assert await reader.pending(b, 0, 10) == []
    finally:
        for ib in [*writers, reader]:
            await ib.close()


async def test_an_append_waits_for_an_uncommitted_one_to_the_same_user(
        inbox: PostgresInbox) -> None:
    """The deterministic form of the test above: while a transaction holds
    an append to b (its seq drawn, not committed), another append to b waits,
    so no reader can see the later seq without the earlier one; an append to
    someone else does not wait."""
    a, b, c = user(), user(), user()
    conn = await inbox.pool.acquire()
    try:
        tx = conn.transaction()
        await tx.start()
        held = await conn.fetchval(
            "SELECT o_seq FROM peer_append($1, $2, 'A', 'first', $3, 1.0)", b, a, b"\x01")
        second = asyncio.create_task(inbox.append(b, a, "A", "second", 2, 2.0))
        await asyncio.wait_for(inbox.append(c, a, "A", "x", 3, 3.0), 5)
        await asyncio.sleep(0.2)
        assert not second.done()
        assert await inbox.pending(b, 0, 10) == []
        await tx.commit()
        later, new = await asyncio.wait_for(second, 5)
        assert new and held < later.seq
        assert [m.seq for m in await inbox.pending(b, 0, 10)] == [held, later.seq]
    finally:
        await inbox.pool.release(conn)


async def test_close_closes_only_a_pool_the_inbox_made(dsn: str) -> None:
    pool = await open_database(dsn, min_size=1, max_size=1)
    shared = PostgresInbox(pool)
    await shared.close()
    assert await pool.fetchval("SELECT 1") == 1  # still usable by its owner
    await pool.close()
    own = await open_postgres_inbox(dsn, min_size=1, max_size=1)
    await own.close()
    assert own.pool.is_closing()


# --------------------------------------------------------------------------
# The same behaviour as the SQLite inbox
# --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
async def test_the_same_answers_as_the_sqlite_inbox(dsn: str, tmp_path: Path,
                                                    seed: int) -> None:
    """A random script of appends (with retries and old timestamps), pages,
    acks and cursor reads gives the same answers from both inboxes. Seqs are
    compared by the order of the messages they name: both grow with each new
    message, but PostgreSQL may skip numbers."""
    rng = random.Random(seed)
    pg_inbox = await open_postgres_inbox(dsn, min_size=1, max_size=1)
    sq_inbox = SqliteInbox(tmp_path / "inbox.sqlite3")
    await sq_inbox.open()
    users, senders = [user() for _ in range(3)], ["s1", "s2"]
    pg_seqs: list[int] = []  # the i-th new message's seq in each inbox
    sq_seqs: list[int] = []

    def norm(msg: PeerMessage, seqs: list[int]) -> tuple[Any, ...]:
        return (seqs.index(msg.seq), msg.to, msg.sender, msg.sender_name, msg.id,
                msg.body, msg.ts)

    def a_seq() -> tuple[int, int]:
        if not pg_seqs or rng.random() < 0.15:
            return 0, 0
        i = rng.randrange(len(pg_seqs))
        return pg_seqs[i], sq_seqs[i]

    try:
        for step in range(250):
            op = rng.random()
            who = rng.choice(users)
            if op < 0.5:
                ts = time.time() - (2 * ACKED_RETENTION_S if rng.random() < 0.3 else 0)
                args = (who, rng.choice(senders), "N", f"id-{rng.randrange(6)}",
                        {"step": step, "b": bytes([step % 256])}, round(ts, 3))
                (pm, pnew), (sm, snew) = await pg_inbox.append(*args), await sq_inbox.append(*args)
                assert pnew == snew, step
                if pnew:
                    pg_seqs.append(pm.seq)
                    sq_seqs.append(sm.seq)
                assert norm(pm, pg_seqs) == norm(sm, sq_seqs), step
            elif op < 0.8:
                after_pg, after_sq = a_seq()
                limit = rng.randrange(1, 6)
                got_pg = await pg_inbox.pending(who, after_pg, limit)
                got_sq = await sq_inbox.pending(who, after_sq, limit)
                assert [norm(m, pg_seqs) for m in got_pg] == [norm(m, sq_seqs) for m in got_sq]
            elif op < 0.95:
                upto_pg, upto_sq = a_seq()
                await pg_inbox.ack(who, upto_pg)
                await sq_inbox.ack(who, upto_sq)
            else:
                a, s = await pg_inbox.acked_upto(who), await sq_inbox.acked_upto(who)
                assert (a == 0 and s == 0) or pg_seqs.index(a) == sq_seqs.index(s)
        for who in users:  # and everything that is left
            assert ([norm(m, pg_seqs) for m in await pg_inbox.pending(who, 0, 1000)]
                    == [norm(m, sq_seqs) for m in await sq_inbox.pending(who, 0, 1000)])
    finally:
        await pg_inbox.close()
        await sq_inbox.close()


# --------------------------------------------------------------------------
# Restarts of PostgreSQL
# --------------------------------------------------------------------------
async def test_the_inbox_survives_restarts_of_postgresql() -> None:
    """A clean stop, then a crash (no shutdown checkpoint: the WAL is
    replayed): messages, the cursor and deduplication are all still there."""
    with PgServer() as own:
        dsn = await own.create_database()
        inbox = await open_postgres_inbox(dsn)
        a, b = user(), user()
        waiting = [(await inbox.append(b, a, "A", f"r-{i}", {"n": i}, float(i)))[0]
                   for i in range(4)]
        await inbox.ack(b, waiting.pop(0).seq)
        cursor = await inbox.acked_upto(b)
        r3 = waiting[-1]
        await inbox.close()
        for immediate in (False, True):
            own.restart(immediate=immediate)
            inbox = await open_postgres_inbox(dsn)
            try:
                assert await inbox.acked_upto(b) == cursor
                assert await inbox.pending(b, 0, 10) == waiting
                again, new = await inbox.append(b, a, "A", "r-3", {"n": 3}, 3.0)
                # A retry of r-3 (still unacknowledged) answers its first seq.
                assert not new and again.seq == r3.seq
                later, new = await inbox.append(b, a, "A", f"later-{immediate}", "x", 4.0)
                assert new and later.seq > waiting[-1].seq
                waiting.append(later)
                await inbox.ack(b, waiting.pop(0).seq)
                cursor = await inbox.acked_upto(b)
            finally:
                await inbox.close()
