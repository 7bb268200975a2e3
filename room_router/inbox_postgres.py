"""The peer inbox on PostgreSQL (asyncpg): the ``Inbox`` of the distributed
deployment, with the semantics of ``room_router.inbox.SqliteInbox`` (read
its docstring): append with deduplication of retries, pending in ``seq``
order above the user's acknowledgement cursor, ack as a cursor that only
moves forward, acknowledged messages purged after ``ACKED_RETENTION_S``.

Tables ``peer_inbox`` and ``peer_cursor`` come from the shared migration set
(``state_versions/migrations/0002_peer_inbox.sql``). Bodies are msgpack, as
in the embedded inbox, so a body reads back with the types it was sent with.

``seq`` is an identity column, shared by all users. Many edge processes
append concurrently, and a cursor must never pass a seq that is not yet
committed, so ``peer_append`` holds a per-addressee advisory lock from
before it draws the seq until it commits: one user's messages become visible
in seq order (see the migration).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgpack

from room_router.inbox import ACKED_RETENTION_S, PeerMessage

if TYPE_CHECKING:
    from room_router.inbox import Inbox
from state_versions.migrations import PoolAdapter, open_database

_BIGINT_MAX = 2**63 - 1


class PostgresInbox(PoolAdapter):
    """``Inbox`` on an asyncpg pool whose database is migrated by
    ``state_versions.migrations`` (``open_postgres_inbox`` does both)."""

    what = "peer inbox"

    async def append(self, to: str, sender: str, sender_name: str, client_id: str,
                     body: Any, ts: float) -> tuple[PeerMessage, bool]:
        row = await self._db(
            "fetchrow", "SELECT is_new, o_seq, o_from_name, o_body, o_ts"
            " FROM peer_append($1, $2, $3, $4, $5, $6)",
            to, sender, sender_name, client_id, msgpack.packb(body, use_bin_type=True), ts)
        return PeerMessage(int(row["o_seq"]), to, sender, row["o_from_name"], client_id,
                           msgpack.unpackb(row["o_body"], raw=False),
                           float(row["o_ts"])), bool(row["is_new"])

    async def pending(self, user: str, after: int, limit: int) -> list[PeerMessage]:
        rows = await self._db(
            "fetch", """
            SELECT seq, to_user, from_user, from_name, client_id, body, ts
            FROM peer_inbox
            WHERE to_user = $1 AND seq > greatest($2::bigint, coalesce(
                (SELECT acked_upto FROM peer_cursor WHERE user_id = $1), 0))
            ORDER BY seq
            LIMIT $3
            """,
            user, _clamp(after), max(0, limit))
        return [PeerMessage(int(r["seq"]), r["to_user"], r["from_user"], r["from_name"],
                            r["client_id"], msgpack.unpackb(r["body"], raw=False),
                            float(r["ts"])) for r in rows]

    async def ack(self, user: str, upto: int) -> None:
        # The cursor only moves forward; what it passed and is older than the
        # retention is purged in the same statement.
        await self._db(
            "execute", """
            WITH cursor AS (
                INSERT INTO peer_cursor AS c (user_id, acked_upto) VALUES ($1, $2)
                ON CONFLICT (user_id)
                DO UPDATE SET acked_upto = greatest(c.acked_upto, excluded.acked_upto)
            )
            DELETE FROM peer_inbox WHERE to_user = $1 AND seq <= $2 AND ts < $3
            """,
            user, _clamp(upto), time.time() - ACKED_RETENTION_S)

    async def acked_upto(self, user: str) -> int:
        upto = await self._db(
            "fetchval", "SELECT acked_upto FROM peer_cursor WHERE user_id = $1", user)
        return 0 if upto is None else int(upto)


def _clamp(v: int) -> int:
    return max(0, min(v, _BIGINT_MAX))


async def open_postgres_inbox(dsn: str, *, min_size: int = 2,
                              max_size: int = 10) -> PostgresInbox:
    """Connect, apply the pending migrations, and return an inbox that owns
    its pool."""
    return PostgresInbox(await open_database(dsn, min_size=min_size, max_size=max_size),
                         owns_pool=True)


if TYPE_CHECKING:
    # mypy checks that the class keeps to the interface.
    def _is_an_inbox(inbox: PostgresInbox) -> Inbox:
        return inbox
