"""The direct interactions on PostgreSQL (asyncpg): the ``InteractionStore``
of the distributed deployment (``liveroom agents --postgres``), with the
semantics of ``SqliteInteractionStore``: the interaction row, its events in
``seq`` order, and interactions this process left running marked failed
("interrupted") when it opens the store again.

Several agents processes share the database, so each row records the
``node`` that runs it and ``open`` only fails its own node's leftovers: give
every agents process a node id of its own that stays the same across its
restarts (``--node-id``). Rows that have been running for longer than
``abandoned_after`` seconds are failed too, whatever their node: no reply
runs that long, so their process is gone for good (renamed, or never came
back).

Tables come from the shared migration set
(``storage/migrations/0004_interactions.sql``); ``user`` is the
column ``user_id`` (``user`` is reserved in SQL) and reads back as ``user``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from storage.postgres import PoolAdapter, open_database

if TYPE_CHECKING:
    from llm_agents.interactions import InteractionStore

_COLUMNS = ("id", "room", "agent", "user_id", "text", "status", "reply", "error",
            "prompt_tokens", "completion_tokens", "created", "finished")
_INSERTABLE = frozenset(_COLUMNS)

# An hour: far above any reply (the openai backend gives up after its
# timeout and retries, well under a minute by default).
ABANDONED_AFTER_S = 3600.0


class PostgresInteractionStore(PoolAdapter):
    what = "interaction store"

    def __init__(self, pool: Any, node: str, *, owns_pool: bool = False,
                 abandoned_after: float = ABANDONED_AFTER_S) -> None:
        if not node:
            raise ValueError("a PostgreSQL interaction store needs a node id")
        super().__init__(pool, owns_pool=owns_pool)
        self.node = node
        self._abandoned_after = abandoned_after

    async def open(self) -> None:
        """Fail what this node left running (and what anyone abandoned)."""
        await self._db("execute", """
            UPDATE interactions SET status = 'failed', error = 'interrupted', finished = $3
            WHERE status = 'running' AND (node = $1 OR created < $2)
            """, self.node, time.time() - self._abandoned_after, time.time())

    async def create(self, row: dict[str, Any]) -> None:
        values = {("user_id" if k == "user" else k): v for k, v in row.items()}
        unknown = set(values) - _INSERTABLE
        if unknown:
            raise ValueError(f"unknown interaction columns: {sorted(unknown)}")
        values["node"] = self.node
        cols = ", ".join(values)
        marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
        await self._db("execute", f"INSERT INTO interactions ({cols}) VALUES ({marks})",
                       *values.values())

    async def add_event(self, interaction: str, seq: int, event: str, data: str) -> None:
        await self._db("execute", "INSERT INTO interaction_events (interaction, seq, event, data)"
                       " VALUES ($1, $2, $3, $4)", interaction, seq, event, data)

    async def finish(self, interaction: str, status: str, reply: str, error: str | None,
                     prompt_tokens: int | None, completion_tokens: int | None,
                     finished: float) -> None:
        await self._db("execute", """
            UPDATE interactions SET status = $2, reply = $3, error = $4, prompt_tokens = $5,
                                    completion_tokens = $6, finished = $7
            WHERE id = $1
            """, interaction, status, reply, error, prompt_tokens, completion_tokens, finished)

    async def get(self, interaction: str) -> dict[str, Any] | None:
        row = await self._db("fetchrow", f"SELECT {', '.join(_COLUMNS)} FROM interactions"
                             " WHERE id = $1", interaction)
        if row is None:
            return None
        out = dict(row)
        out["user"] = out.pop("user_id")
        return out

    async def purge(self, finished_before: float) -> int:
        """Every node's finished interactions (their events go with them:
        ``ON DELETE CASCADE``)."""
        status = await self._db("execute", "DELETE FROM interactions WHERE status <> 'running'"
                                " AND finished < $1", finished_before)
        return int(str(status).rsplit(" ", 1)[-1])

    async def events_after(self, interaction: str, seq: int) -> list[tuple[int, str, str]]:
        rows = await self._db("fetch", "SELECT seq, event, data FROM interaction_events"
                              " WHERE interaction = $1 AND seq > $2 ORDER BY seq",
                              interaction, seq)
        return [(int(r["seq"]), str(r["event"]), str(r["data"])) for r in rows]


async def open_postgres_interactions(dsn: str, node: str, *, min_size: int = 1,
                                     max_size: int = 5) -> PostgresInteractionStore:
    """Connect, apply the pending migrations, and return a store that owns
    its pool (``open`` still has to be called, as for every store)."""
    return PostgresInteractionStore(
        await open_database(dsn, min_size=min_size, max_size=max_size), node, owns_pool=True)


if TYPE_CHECKING:
    # mypy checks that the class keeps to the interface.
    def _is_an_interaction_store(store: PostgresInteractionStore) -> InteractionStore:
        return store
