"""The two ``InteractionStore``s, SQLite (embedded) and PostgreSQL (the
distributed deployment, a real server from tests/pgserver.py), held to the
same contract: rows and events read back as written, events in order after
a cursor, a restart fails what was left running; and what only PostgreSQL
has to do: several agents processes share it, so a restart fails only its
own node's leftovers (and anything abandoned for an hour)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from llm_agents.interactions import InteractionStore
from llm_agents.interactions_postgres import (
    ABANDONED_AFTER_S,
    PostgresInteractionStore,
    open_postgres_interactions,
)
from llm_agents.interactions_sqlite import SqliteInteractionStore
from tests.pgserver import PgServer

Opener = Callable[[str], Awaitable[InteractionStore]]


@pytest.fixture(params=["sqlite", "postgres"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path, pg: PgServer
                 ) -> AsyncIterator[Opener]:
    """``await opener(node)``: an opened store; the same database each call
    (as a process restarting, or a second process)."""
    opened: list[InteractionStore] = []
    dsn = await pg.create_database() if request.param == "postgres" else ""

    async def make(node: str) -> InteractionStore:
        store: InteractionStore
        if request.param == "sqlite":
            store = SqliteInteractionStore(tmp_path / "interactions.sqlite3")
        else:
            store = await open_postgres_interactions(dsn, node)
        await store.open()
        opened.append(store)
        return store

    yield make
    for s in opened:
        await s.close()


def row(iid: str, user: str = "ivy", created: float | None = None) -> dict[str, Any]:
    return {"id": iid, "room": "demo", "agent": "quinn", "user": user, "text": "hi there",
            "status": "running", "created": time.time() if created is None else created}


async def test_rows_and_events_read_back_in_order(opener: Opener) -> None:
    store = await opener("agents-a")
    await store.create(row("i1"))
    got = await store.get("i1")
    assert got is not None
    assert (got["user"], got["status"], got["reply"], got["error"]) == ("ivy", "running", "", None)
    for seq, text in enumerate(["Hel", "lo ", "ivy ✓"], start=1):
        await store.add_event("i1", seq, "delta", f'{{"text": "{text}"}}')
    await store.add_event("i1", 4, "done", '{"status": "done"}')
    assert [e[0] for e in await store.events_after("i1", 0)] == [1, 2, 3, 4]
    assert await store.events_after("i1", 2) == [(3, "delta", '{"text": "ivy ✓"}'),
                                                 (4, "done", '{"status": "done"}')]
    assert await store.events_after("i1", 4) == []
    assert len(await store.events_after("i1", -5)) == 4
    assert await store.events_after("i1", 2**31 - 1) == []
    await store.finish("i1", "done", "Hello ivy ✓", None, 12, 3, time.time())
    got = await store.get("i1")
    assert got is not None
    assert (got["status"], got["reply"], got["prompt_tokens"], got["completion_tokens"]) == \
        ("done", "Hello ivy ✓", 12, 3)
    assert got["finished"] >= got["created"]
    assert await store.get("nope") is None
    assert await store.events_after("nope", 0) == []


async def test_a_duplicate_event_is_refused(opener: Opener) -> None:
    store = await opener("agents-a")
    await store.create(row("i2"))
    await store.add_event("i2", 1, "delta", "{}")
    with pytest.raises(Exception):  # noqa: B017 - sqlite3 and asyncpg raise their own
        await store.add_event("i2", 1, "delta", "{}")
    assert len(await store.events_after("i2", 0)) == 1


async def test_a_restart_fails_what_was_left_running(opener: Opener) -> None:
    first = await opener("agents-a")
    await first.create(row("running"))
    await first.create(row("finished"))
    await first.finish("finished", "done", "ok", None, 1, 1, time.time())
    again = await opener("agents-a")
    got = await again.get("running")
    assert got is not None and (got["status"], got["error"]) == ("failed", "interrupted")
    got = await again.get("finished")
    assert got is not None and got["status"] == "done"


async def test_postgres_restart_leaves_other_nodes_running(dsn: str) -> None:
    a = await open_postgres_interactions(dsn, "agents-a")
    b = await open_postgres_interactions(dsn, "agents-b")
    try:
        await a.open()
        await b.open()
        await a.create(row("of-a"))
        await b.create(row("of-b"))
        await b.create(row("abandoned", created=time.time() - ABANDONED_AFTER_S - 60))
        # agents-a restarts: its own leftovers fail, agents-b's live one
        # runs on, and the abandoned one (no reply runs an hour) fails.
        await a.open()
        status = {i: (await a.get(i) or {}).get("status")
                  for i in ("of-a", "of-b", "abandoned")}
        assert status == {"of-a": "failed", "of-b": "running", "abandoned": "failed"}
        # Another process reads every interaction.
        got = await b.get("of-a")
        assert got is not None and got["error"] == "interrupted"
    finally:
        await a.close()
        await b.close()


async def test_postgres_store_refuses_bad_arguments(dsn: str) -> None:
    with pytest.raises(ValueError, match="node id"):
        PostgresInteractionStore(None, "")
    store = await open_postgres_interactions(dsn, "agents-a")
    try:
        with pytest.raises(ValueError, match="unknown interaction columns"):
            await store.create({**row("x"), "status; DROP TABLE interactions": "x"})
        assert await store.get("x") is None
    finally:
        await store.close()


async def test_purge_forgets_old_finished_interactions_only(opener: Opener) -> None:
    store = await opener("agents-a")
    now = time.time()
    for iid, finished in (("old", now - 10 * 86400), ("recent", now - 60)):
        await store.create(row(iid, created=finished - 1))
        await store.add_event(iid, 1, "done", "{}")
        await store.finish(iid, "done", "ok", None, 1, 1, finished)
    await store.create(row("running", created=now - 8 * 86400 + 3600))
    assert await store.purge(now - 7 * 86400) == 1
    assert await store.get("old") is None and await store.events_after("old", 0) == []
    assert await store.get("recent") is not None and len(await store.events_after("recent", 0)) == 1
    got = await store.get("running")
    assert got is not None and got["status"] == "running"
    assert await store.purge(now - 7 * 86400) == 0


async def test_the_retention_loop_purges_now_and_on_its_period(tmp_path: Path) -> None:
    from llm_agents.interactions import Interactions
    from llm_agents.runtime import AgentRuntime

    store = SqliteInteractionStore(tmp_path / "i.sqlite3")
    await store.open()
    now = [1_000_000.0]
    interactions = Interactions(AgentRuntime(), store, clock=lambda: now[0])
    try:
        await store.create(row("a", created=now[0] - 100))
        await store.finish("a", "done", "", None, None, None, now[0] - 100)
        await store.create(row("b", created=now[0] - 10))
        await store.finish("b", "done", "", None, None, None, now[0] - 10)
        interactions.keep_for(50.0, every=0.02)
        for _ in range(200):  # bounded poll: "a" goes at once
            if await store.get("a") is None:
                break
            await asyncio.sleep(0.01)
        assert await store.get("a") is None and await store.get("b") is not None
        now[0] += 100  # "b" is now past the retention: the next round takes it
        for _ in range(200):
            if await store.get("b") is None:
                break
            await asyncio.sleep(0.01)
        assert await store.get("b") is None
    finally:
        await interactions.close()
        await store.close()
