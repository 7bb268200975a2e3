"""The PostgreSQL state store against a throwaway cluster: the state-version
properties (the same ones, run against the memory store too), compare-and-set,
concurrency from several pools and processes, the history, values, the epoch,
restarts and the migrations."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from hypothesis import given

from state_versions.store_postgres import PostgresStateStore, open_postgres_store
from state_versions.versions import Change, RoomState
from storage.migrations import MigrationError, load_migrations, migrate
from storage.postgres import open_database
from tests.pgserver import PgServer
from tests.state_props import PROPERTY, changes, same
from wire.errors import Unavailable, VersionConflict

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PostgresStateStore]:
    s = await open_postgres_store(dsn)
    yield s
    await s.close()


def new_room() -> str:
    return f"room-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------
# The durable history (the state-version properties shared by every store
# are in test_state_store_properties.py)
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def history_store(pg: PgServer) -> Iterator[tuple[asyncio.Runner, PostgresStateStore]]:
    """One event loop for the history property (hypothesis drives a
    synchronous function; each example runs its coroutine on this loop)."""
    with asyncio.Runner() as runner:
        store = runner.run(_open_props_store(pg))
        yield runner, store
        runner.run(store.close())


async def _open_props_store(pg: PgServer) -> PostgresStateStore:
    return await open_postgres_store(await pg.create_database("props"), min_size=1, max_size=2)


def test_history_is_every_change_and_rebuilds_every_snapshot(history_store) -> None:
    runner, store = history_store

    async def prop(room: str, seq: list[tuple[str, Any]]) -> None:
        model = RoomState(room)
        snaps = [model.snapshot()]
        applied = []
        for section, value in seq:
            applied.append(await store.apply(room, section, value))
            model.apply(section, value)
            snaps.append(model.snapshot())
        assert same(await store.history(room), applied)
        assert same(await store.history(room, after=len(seq) // 2, limit=3),
                    applied[len(seq) // 2:][:3])
        for n, snap in enumerate(snaps):
            at = await store.snapshot_at(room, n)
            assert at is not None and at.total == n
            assert same(dict(at.sections), dict(snap.sections))
        assert await store.snapshot_at(room, len(seq) + 1) is None

    @PROPERTY
    @given(changes)
    def check(seq: list[tuple[str, Any]]) -> None:
        runner.run(prop(new_room(), seq))

    check()


# --------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------
async def test_values_read_back_equal_and_of_the_same_types(store: PostgresStateStore) -> None:
    """JSON numbers and text exactly as written (no rewriting of 1e23 into an
    int, U+0000 kept, key order kept), through every read."""
    room = new_room()
    value = {"z": 1e23, "a": [1e16, -0.0, 5e-324, 2**64 - 1, -(2**63), 1.0],
             "nul": "a\x00b", "text": "é\u2028😀", "none": None, "t": True}
    await store.apply(room, "meta", value)
    for got in [(await store.section(room, "meta")),
                (await store.snapshot(room)).sections["meta"],
                (await store.changed_since(room, {}))[1][0],
                (await store.history(room))[0],
                (await store.snapshot_at(room, 1)).sections["meta"]]:  # type: ignore[union-attr]
        assert got is not None and same(got.value, value)
        assert list(got.value) == list(value)


async def test_a_value_that_is_not_json_is_refused_and_changes_nothing(
        store: PostgresStateStore) -> None:
    room = new_room()
    await store.apply(room, "meta", 1)
    for bad in [float("nan"), b"bytes", {1: "int key"}.items()]:
        with pytest.raises((ValueError, TypeError)):
            await store.apply(room, "meta", bad)
    assert await store.versions(room) == (1, {"meta": 1})


# --------------------------------------------------------------------------
# Compare-and-set and odd versions
# --------------------------------------------------------------------------
async def test_compare_and_set_conflicts_carry_the_current_versions(
        store: PostgresStateStore) -> None:
    room = new_room()
    await store.apply(room, "pinned", "x", expected=0)  # create only
    with pytest.raises(VersionConflict) as info:
        await store.apply(room, "pinned", "y", expected=0)
    assert info.value.extra == {"section": "pinned", "current": 1, "total": 1}
    await store.apply(room, "meta", "m")
    # Versions that cannot be stored match nothing; they do not crash.
    for expected in [2**70, -1, 5]:
        with pytest.raises(VersionConflict) as info:
            await store.apply(room, "pinned", "y", expected=expected)
        assert info.value.extra == {"section": "pinned", "current": 1, "total": 2}
    # A conflict on a room that has nothing yet leaves it empty.
    empty = new_room()
    with pytest.raises(VersionConflict) as info:
        await store.apply(empty, "meta", "m", expected=3)
    assert info.value.extra == {"section": "meta", "current": 0, "total": 0}
    assert await store.versions(empty) == (0, {})
    assert (await store.snapshot(empty)).sections == {}
    assert [c.total for c in await store.history(room)] == [1, 2]


async def test_changed_since_with_unknown_sections_and_absurd_versions(
        store: PostgresStateStore) -> None:
    room = new_room()
    await store.apply(room, "meta", 1)
    await store.apply(room, "stage", 2)
    total, outdated = await store.changed_since(room, {"meta": 2**70, "stage": 1, "nosuch": 9})
    assert total == 2 and [s.name for s in outdated] == ["meta"]
    assert await store.changed_since(new_room(), {"meta": 1}) == (0, [])
    assert await store.section(new_room(), "meta") is None
    snap = await store.snapshot(new_room())
    assert snap.total == 0 and snap.sections == {}


# --------------------------------------------------------------------------
# Recording changes versioned elsewhere (the two-tier store's write-behind)
# --------------------------------------------------------------------------
async def test_record_keeps_given_versions_and_only_moves_forward(
        store: PostgresStateStore) -> None:
    room, other = new_room(), new_room()
    batch = [Change(room, "meta", 1, 1, {"v": 1}), Change(other, "meta", 1, 1, "o"),
             Change(room, "stage", 1, 2, [1]), Change(room, "meta", 2, 3, {"v": 2})]
    assert await store.record(batch) == (4, 0)
    assert same(await store.history(room), [batch[0], batch[2], batch[3]])
    snap = await store.snapshot(room)
    assert snap.total == 3 and snap.versions() == {"meta": 2, "stage": 1}
    assert snap.sections["meta"].value == {"v": 2}
    # The same batch again (a retry after a lost reply) changes nothing.
    assert await store.record(batch) == (0, 0)
    assert same(await store.history(room), [batch[0], batch[2], batch[3]])
    # A late change with an older partial does not move a section back (its
    # history row is kept); values the database cannot hold, or absurd
    # versions, are skipped.
    late = [Change(room, "meta", 1, 4, "late"), Change(room, "x", 1, 5, b"bytes"),
            Change(room, "y", 0, 6, 1), Change(room, "z", 1, 2**64, 1)]
    assert await store.record(late) == (1, 3)
    snap = await store.snapshot(room)
    assert snap.sections["meta"].value == {"v": 2} and snap.total == 4
    # A section moves forward by partial (a room reloaded into Redis keeps
    # its partials, so its next change wins even at a total seen before).
    assert await store.record([Change(room, "meta", 3, 3, "reloaded")]) == (0, 0)
    assert (await store.section(room, "meta")).value == "reloaded"  # type: ignore[union-attr]
    assert await store.record([]) == (0, 0)
    # Applies after recorded changes go on from the recorded total.
    change = await store.apply(room, "meta", "applied")
    assert (change.partial, change.total) == (4, 5)


# --------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------
async def test_concurrent_applies_from_several_pools_have_no_gaps_or_duplicates(
        dsn: str) -> None:
    stores = [await open_postgres_store(dsn, min_size=4, max_size=4) for _ in range(3)]
    try:
        room = new_room()
        rng = random.Random(7)
        n = 300
        plan = [(rng.choice(stores), rng.choice(["meta", "pinned", "stage", "stage.a"]), i)
                for i in range(n)]
        done = await asyncio.gather(*(s.apply(room, sec, {"i": i}) for s, sec, i in plan))
        assert sorted(c.total for c in done) == list(range(1, n + 1))
        by_section: dict[str, list[int]] = defaultdict(list)
        for c in done:
            by_section[c.section].append(c.partial)
        for partials in by_section.values():
            assert sorted(partials) == list(range(1, len(partials) + 1))
        total, versions = await stores[0].versions(room)
        assert total == n == sum(versions.values())
        assert versions == {sec: len(p) for sec, p in by_section.items()}
        history = await stores[1].history(room, limit=n + 1)
        assert sorted(history, key=lambda c: c.total) == sorted(done, key=lambda c: c.total)
        # The latest value of each section is its change with the highest partial.
        snap = await stores[2].snapshot(room)
        for sec, s in snap.sections.items():
            last = max((c for c in done if c.section == sec), key=lambda c: c.partial)
            assert s.value == last.value and s.partial == last.partial
    finally:
        for s in stores:
            await s.close()


async def test_concurrent_compare_and_set_has_exactly_one_winner(dsn: str) -> None:
    stores = [await open_postgres_store(dsn, min_size=5, max_size=5) for _ in range(2)]
    try:
        room = new_room()
        await stores[0].apply(room, "meta", "base")
        results = await asyncio.gather(
            *(stores[i % 2].apply(room, "pinned", i, expected=0) for i in range(20)),
            return_exceptions=True)
        wins = [r for r in results if not isinstance(r, BaseException)]
        losses = [r for r in results if isinstance(r, VersionConflict)]
        assert len(wins) == 1 and len(losses) == 19
        assert wins[0].partial == 1 and wins[0].total == 2
        assert all(e.extra["current"] == 1 and e.extra["total"] == 2 for e in losses)
        assert await stores[1].versions(room) == (2, {"meta": 1, "pinned": 1})
    finally:
        for s in stores:
            await s.close()


_WORKER = """
import asyncio, json, sys
from state_versions.store_postgres import open_postgres_store

async def main(dsn, room, n, seed):
    store = await open_postgres_store(dsn, min_size=3, max_size=3)
    sections = ["meta", "pinned", "stage"]
    done = await asyncio.gather(*(store.apply(room, sections[(i + seed) % 3], [seed, i])
                                  for i in range(n)))
    print(json.dumps({"epoch": store.epoch,
                      "changes": [[c.section, c.partial, c.total] for c in done]}))
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


async def test_processes_starting_at_once_migrate_once_and_apply_without_gaps(
        dsn: str) -> None:
    """Three processes start on a fresh database at the same time: each runs
    the migrations (each file is applied once) and then applies changes to
    one room concurrently."""
    room, n = new_room(), 60
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WORKER, dsn, room, str(n), str(seed), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE) for seed in range(3)]
    outs = []
    for p in procs:
        out, err = await asyncio.wait_for(p.communicate(), 30)
        assert p.returncode == 0, err.decode()
        outs.append(json.loads(out))
    assert len({o["epoch"] for o in outs}) == 1
    changes = [c for o in outs for c in o["changes"]]
    assert sorted(c[2] for c in changes) == list(range(1, 3 * n + 1))
    for sec in ["meta", "pinned", "stage"]:
        partials = sorted(c[1] for c in changes if c[0] == sec)
        assert partials == list(range(1, len(partials) + 1))
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [m.version for m in load_migrations()]
        assert await conn.fetchval("SELECT count(*) FROM history WHERE room = $1", room) == 3 * n
    finally:
        await conn.close()


# --------------------------------------------------------------------------
# Epoch, restarts
# --------------------------------------------------------------------------
async def test_epoch_survives_reconnects_and_restarts_and_changes_with_a_new_database(
        pg: PgServer) -> None:
    with PgServer() as own:
        dsn = await own.create_database()
        store = await open_postgres_store(dsn)
        epoch = store.epoch
        room = new_room()
        for i in range(5):
            await store.apply(room, "meta" if i % 2 else "stage", i)
        await store.close()
        again = await open_postgres_store(dsn)
        assert again.epoch == epoch
        # A crash of PostgreSQL (no shutdown checkpoint): the WAL is replayed.
        own.restart(immediate=True)
        after = await open_postgres_store(dsn)
        try:
            assert after.epoch == epoch
            assert await after.versions(room) == (5, {"meta": 2, "stage": 3})
            assert [c.total for c in await after.history(room)] == [1, 2, 3, 4, 5]
            assert (await after.apply(room, "meta", "on")).total == 6
        finally:
            await after.close()
        # A running process's pool outlives a restart: a call on a connection
        # that died is Unavailable (retry later), then the pool reconnects.
        own.restart()
        failures = 0
        for _ in range(again.pool.get_max_size() + 1):
            try:
                assert await again.versions(room) == (6, {"meta": 3, "stage": 3})
                break
            except Unavailable:
                failures += 1
        assert failures <= again.pool.get_max_size()
        assert (await again.apply(room, "stage", "on")).total == 7
        await again.close()
        other_db = await open_postgres_store(await own.create_database())
        assert other_db.epoch != epoch
        await other_db.close()
    # Another cluster altogether.
    elsewhere = await open_postgres_store(await pg.create_database())
    assert elsewhere.epoch != epoch
    await elsewhere.close()


# --------------------------------------------------------------------------
# Migrations
# --------------------------------------------------------------------------
async def test_migrations_race_from_several_pools_applies_each_file_once(
        dsn: str, tmp_path: Path) -> None:
    """Files that would fail if run twice (a plain CREATE TABLE, a counter):
    five pools migrate at once, and each file is applied by exactly one."""
    (tmp_path / "0001_first.sql").write_text(
        "CREATE TABLE counter (name text PRIMARY KEY, n int NOT NULL);\n"
        "INSERT INTO counter VALUES ('runs', 1);\n")
    (tmp_path / "0002_second.sql").write_text("UPDATE counter SET n = n + 1;\n")
    (tmp_path / "0010_third.sql").write_text(
        "SELECT pg_sleep(0.05); UPDATE counter SET n = n + 10;\n")
    pools = [await asyncpg.create_pool(dsn, min_size=1, max_size=1) for _ in range(5)]
    try:
        applied = await asyncio.gather(*(migrate(p, tmp_path) for p in pools))
        assert Counter(v for a in applied for v in a) == {1: 1, 2: 1, 10: 1}
        conn = await pools[0].acquire()
        try:
            assert await conn.fetchval("SELECT n FROM counter") == 12
            assert await migrate(conn, tmp_path) == []
        finally:
            await pools[0].release(conn)
        # A new file is applied by the next start; the old ones are not rerun.
        (tmp_path / "0011_fourth.sql").write_text("UPDATE counter SET n = n + 100;\n")
        assert await migrate(pools[1], tmp_path) == [11]
        assert await pools[2].fetchval("SELECT n FROM counter") == 112
    finally:
        for p in pools:
            await p.close()


async def test_migration_errors(dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE t (x int);\n")
    pool = await open_database(dsn, directory=tmp_path, min_size=1, max_size=1)
    try:
        # An applied file that was edited is refused.
        (tmp_path / "0001_ok.sql").write_text("CREATE TABLE t (x bigint);\n")
        with pytest.raises(MigrationError, match="has changed"):
            await migrate(pool, tmp_path)
        (tmp_path / "0001_ok.sql").write_text("CREATE TABLE t (x int);\n")
        # A failing file leaves nothing behind, and the ones before it applied.
        (tmp_path / "0002_bad.sql").write_text(
            "CREATE TABLE u (x int);\nSELECT * FROM no_such_table;\n")
        with pytest.raises(MigrationError, match="0002_bad"):
            await migrate(pool, tmp_path)
        assert await pool.fetchval("SELECT to_regclass('u')") is None
        assert await pool.fetchval("SELECT max(version) FROM schema_migrations") == 1
    finally:
        await pool.close()
    # Misnamed and duplicate files are refused before touching the database.
    (tmp_path / "0002_bad.sql").unlink()
    (tmp_path / "3_short.sql").write_text("")
    with pytest.raises(MigrationError, match="NNNN_name"):
        load_migrations(tmp_path)
    (tmp_path / "3_short.sql").unlink()
    (tmp_path / "0001_again.sql").write_text("")
    with pytest.raises(MigrationError, match="two migrations"):
        load_migrations(tmp_path)


def test_the_shipped_migrations_are_well_formed() -> None:
    found = load_migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "init"
