"""The peer inbox on PostgreSQL (asyncpg): the ``Inbox`` of the distributed
deployment, with the semantics of ``room_router.inbox.SqliteInbox`` (read
its docstring): append with deduplication of retries, pending in ``seq``
order above the user's acknowledgement cursor, ack as a cursor that only
moves forward, acknowledged messages purged after ``ACKED_RETENTION_S``.

Tables ``peer_inbox`` and ``peer_cursor`` come from the shared migration set
(``storage/migrations/0002_peer_inbox.sql``, and ``0005`` for
``prev`` and the unacknowledged counters of the caps). Bodies are msgpack, as
in the embedded inbox, so a body reads back with the types it was sent with.

``seq`` is an identity column, shared by all users. Many edge processes
append concurrently, and a cursor must never pass a seq that is not yet
committed, so ``peer_append_capped`` holds a per-addressee advisory lock
from before it draws the seq until it commits: one user's messages become
visible in seq order (see the migrations). The same lock makes ``prev`` and
the cap check exact, and ``peer_ack`` takes it too, so a user's counters
change one append or ack at a time.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgpack

from room_router.inbox import ACKED_RETENTION_S, InboxCap, PeerMessage

if TYPE_CHECKING:
    from room_router.inbox import Inbox
from storage.postgres import PoolAdapter, open_database

_BIGINT_MAX = 2**63 - 1


class PostgresInbox(PoolAdapter):
    """``Inbox`` on an asyncpg pool whose database is migrated by
    ``storage.migrations`` (``open_postgres_inbox`` does both)."""

    what = "peer inbox"

    async def append(self, to: str, sender: str, sender_name: str, client_id: str,
                     body: Any, ts: float, cap: InboxCap | None = None
                     ) -> tuple[PeerMessage, bool]:
        row = await self._db(
            "fetchrow", "SELECT outcome, o_seq, o_prev, o_from_name, o_body, o_ts"
            " FROM peer_append_capped($1, $2, $3, $4, $5, $6, $7, $8)",
            to, sender, sender_name, client_id, msgpack.packb(body, use_bin_type=True), ts,
            cap.messages if cap else 0, cap.bytes if cap else 0)
        outcome = row["outcome"]
        if outcome.startswith("full_"):
            assert cap is not None
            raise cap.error(to, outcome[len("full_"):])
        return PeerMessage(int(row["o_seq"]), to, sender, row["o_from_name"], client_id,
                           msgpack.unpackb(row["o_body"], raw=False),
                           float(row["o_ts"]), int(row["o_prev"])), outcome == "new"

    async def pending(self, user: str, after: int, limit: int) -> list[PeerMessage]:
        rows = await self._db(
            "fetch", """
            SELECT seq, to_user, from_user, from_name, client_id, body, ts, prev
            FROM peer_inbox
            WHERE to_user = $1 AND seq > greatest($2::bigint, coalesce(
                (SELECT acked_upto FROM peer_cursor WHERE user_id = $1), 0))
            ORDER BY seq
            LIMIT $3
            """,
            user, _clamp(after), max(0, limit))
        return [PeerMessage(int(r["seq"]), r["to_user"], r["from_user"], r["from_name"],
                            r["client_id"], msgpack.unpackb(r["body"], raw=False),
                            float(r["ts"]), int(r["prev"])) for r in rows]

    async def ack(self, user: str, upto: int) -> None:
        # The cursor only moves forward, the counters lose what it passes, and
        # what it passed and is older than the retention is purged: one
        # function, under the user's lock (migration 0005).
        await self._db("execute", "SELECT peer_ack($1, $2, $3)",
                       user, _clamp(upto), time.time() - ACKED_RETENTION_S)

    async def unacked(self, user: str) -> tuple[int, int]:
        """(messages, body bytes) the user has not acknowledged, as counted."""
        row = await self._db(
            "fetchrow", "SELECT unacked_count, unacked_bytes FROM peer_cursor"
            " WHERE user_id = $1", user)
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

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
