"""The state-version properties, the same ones against every StateStore:
memory, Redis standalone, Redis Cluster, PostgreSQL, and the two-tier store
(Redis hot, PostgreSQL durable, written behind). Every example uses a room of its own, so
the stores (and the servers under them) are shared by the whole module.

Properties: the total is the sum of the partials and grows by one per change;
replaying the sections changed since a client's versions onto its total N
gives N+k and exactly the store's values; compare-and-set applies only at
the expected version and a refusal changes nothing; changed_since returns
exactly the outdated sections; every read agrees with the pure core
(``RoomState``), values equal and of the same types; a snapshot never
changes after it was taken."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from state_versions.store import MemoryStateStore, StateStore
from state_versions.store_postgres import open_postgres_store
from state_versions.store_redis import RedisStateStore
from state_versions.store_tiered import TieredStateStore
from state_versions.versions import RoomState
from storage.redis_conn import open_redis
from tests.pgserver import PgServer
from tests.redisserver import RedisClusterServers, RedisServer
from tests.state_props import PROPERTY, changes, new_room, same, sections
from wire.errors import VersionConflict

KINDS = ["memory", "redis", "redis-cluster", "postgres", "tiered"]
STORE_KINDS = pytest.mark.parametrize("kind", KINDS)


@pytest.fixture(scope="module")
def stores(pg: PgServer, redis_server: RedisServer, redis_cluster: RedisClusterServers,
           ) -> Iterator[tuple[asyncio.Runner, dict[str, StateStore]]]:
    """One event loop for the module (hypothesis drives a synchronous
    function; each example runs its coroutine on this loop) and the stores."""
    with asyncio.Runner() as runner:
        async def open_all() -> dict[str, Any]:
            return {
                "memory": MemoryStateStore(),
                "redis": await RedisStateStore.open(open_redis(redis_server.url)),
                "redis-cluster": await RedisStateStore.open(open_redis(redis_cluster.url)),
                "postgres": await open_postgres_store(await pg.create_database("props"),
                                                      min_size=1, max_size=2),
                "tiered": TieredStateStore(
                    await RedisStateStore.open(open_redis(redis_server.url)),
                    await open_postgres_store(await pg.create_database("tiered"),
                                              min_size=1, max_size=2)),
            }

        by_kind = runner.run(open_all())
        yield runner, by_kind

        async def close_all() -> None:
            tiered = by_kind["tiered"]
            await tiered.close()
            await tiered.durable.close()
            await tiered.hot.client.aclose()
            await by_kind["postgres"].close()
            for kind in ("redis", "redis-cluster"):
                await by_kind[kind].client.aclose()

        runner.run(close_all())


def run_property(stores: tuple[asyncio.Runner, dict[str, StateStore]], kind: str,
                 strategy: st.SearchStrategy[Any],
                 prop: Callable[[StateStore, str, Any], Awaitable[None]]) -> None:
    runner, by_kind = stores
    store = by_kind[kind]

    @PROPERTY
    @given(strategy)
    def check(example: Any) -> None:
        runner.run(prop(store, new_room(), example))

    check()


@STORE_KINDS
def test_total_is_sum_of_partials_and_grows_by_one_per_change(stores, kind) -> None:
    async def prop(store: StateStore, room: str, seq: list[tuple[str, Any]]) -> None:
        for i, (section, value) in enumerate(seq, start=1):
            change = await store.apply(room, section, value)
            assert change.total == i and change.value == value
            total, versions = await store.versions(room)
            assert total == i == sum(versions.values())
            assert versions[section] == change.partial
        snap = await store.snapshot(room)
        assert snap.total == len(seq) == sum(snap.versions().values())

    run_property(stores, kind, changes, prop)


@STORE_KINDS
def test_replaying_changed_sections_onto_total_n_gives_total_n_plus_k(stores, kind) -> None:
    """A client at total N that applies the sections changed since its
    versions ends with exactly the store's sections and total N+k."""
    async def prop(store: StateStore, room: str,
                   example: tuple[list[tuple[str, Any]], list[tuple[str, Any]]]) -> None:
        first, then = example
        for section, value in first:
            await store.apply(room, section, value)
        n, client_versions = await store.versions(room)
        client_values = {s.name: s.value for s in (await store.changed_since(room, {}))[1]}
        for section, value in then:
            await store.apply(room, section, value)
        total, outdated = await store.changed_since(room, client_versions)
        for s in outdated:
            client_versions[s.name] = s.partial
            client_values[s.name] = s.value
        assert sum(client_versions.values()) == n + len(then) == total
        assert client_versions == (await store.versions(room))[1]
        snap = await store.snapshot(room)
        assert client_values == {name: s.value for name, s in snap.sections.items()}
        # Only sections that actually moved are sent, in name order.
        assert {s.name for s in outdated} == {section for section, _ in then}
        assert [s.name for s in outdated] == sorted(s.name for s in outdated)

    run_property(stores, kind, st.tuples(changes, changes), prop)


@STORE_KINDS
def test_nothing_is_outdated_for_a_client_that_is_up_to_date(stores, kind) -> None:
    async def prop(store: StateStore, room: str, seq: list[tuple[str, Any]]) -> None:
        for section, value in seq:
            await store.apply(room, section, value)
        total, versions = await store.versions(room)
        assert await store.changed_since(room, versions) == (total, [])

    run_property(stores, kind, changes, prop)


@STORE_KINDS
def test_compare_and_set_applies_only_at_the_expected_version(stores, kind) -> None:
    async def prop(store: StateStore, room: str,
                   example: tuple[list[tuple[str, Any]], str, int]) -> None:
        seq, section, expected = example
        for s, value in seq:
            await store.apply(room, s, value)
        before, versions = await store.versions(room)
        current = versions.get(section, 0)
        if expected == current:
            change = await store.apply(room, section, "new", expected)
            assert change.partial == current + 1 and change.total == before + 1
        else:
            with pytest.raises(VersionConflict) as info:
                await store.apply(room, section, "new", expected)
            assert info.value.extra == {"section": section, "current": current,
                                        "total": before}
            # A refused write changes nothing.
            assert await store.versions(room) == (before, versions)

    run_property(stores, kind,
                 st.tuples(changes, sections, st.integers(min_value=0, max_value=8)), prop)


@STORE_KINDS
def test_the_store_agrees_with_the_pure_core(stores, kind) -> None:
    """Every read of the store equals the same read of a RoomState that saw
    the same changes (values equal and of the same types)."""
    async def prop(store: StateStore, room: str,
                   example: tuple[list[tuple[str, Any]], dict[str, int]]) -> None:
        seq, known = example
        model = RoomState(room)
        for section, value in seq:
            assert await store.apply(room, section, value) == model.apply(section, value)
        assert await store.versions(room) == (model.total, model.versions())
        total, outdated = await store.changed_since(room, known)
        assert total == model.total
        assert same(outdated, model.changed_since(known))
        snap = await store.snapshot(room)
        assert snap.total == model.total
        assert same(dict(snap.sections), dict(model.snapshot().sections))
        for name in ["meta", "stage.bot", "nosuch"]:
            assert same(await store.section(room, name), model.get(name))

    run_property(stores, kind, st.tuples(
        changes, st.dictionaries(sections, st.integers(min_value=0, max_value=6))), prop)


@STORE_KINDS
def test_a_snapshot_never_changes_after_it_was_taken(stores, kind) -> None:
    async def prop(store: StateStore, room: str,
                   example: tuple[list[tuple[str, Any]], list[tuple[str, Any]]]) -> None:
        first, then = example
        for section, value in first:
            await store.apply(room, section, value)
        snap = await store.snapshot(room)
        kept = copy.deepcopy((snap.total, dict(snap.sections)))
        for section, value in then:
            await store.apply(room, section, value)
        assert same((snap.total, dict(snap.sections)), kept)
        assert snap.total == sum(snap.versions().values())
        again = await store.snapshot(room)
        assert again.total == snap.total + len(then)

    run_property(stores, kind, st.tuples(changes, changes), prop)
