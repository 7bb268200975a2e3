"""The seat stores (SQLite, Redis standalone and Cluster) and the seating
loop's one-owner rules, in process against a memory node registry."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from llm_agents.runtime import AgentRuntime
from llm_agents.seating import Seating
from llm_agents.seats import MemorySeatStore, Seat, SeatLimits, SeatStore
from llm_agents.seats_redis import ALL, ROOMS, VERSION, RedisSeatStore
from llm_agents.seats_sqlite import SqliteSeatStore
from room_router.nodes import MemoryNodeRegistry
from storage.redis_conn import RedisClient
from wire.errors import TooManySeats


async def check_store(store: SeatStore) -> None:
    v0, seats = await store.seats()
    assert seats == []
    assert await store.add(Seat("r", "quinn"), 2, 3) is True
    assert await store.add(Seat("r", "quinn"), 2, 3) is False
    assert await store.add(Seat("r", "max"), 2, 3) is True
    with pytest.raises(TooManySeats) as err:
        await store.add(Seat("r", "sage"), 2, 3)
    assert err.value.extra["scope"] == "room"
    assert await store.add(Seat("s", "sage"), 2, 3) is True
    with pytest.raises(TooManySeats) as err:
        await store.add(Seat("t", "sage"), 2, 3)
    assert err.value.extra["scope"] == "cluster"
    v1, seats = await store.seats()
    assert v1 != v0 and seats == [Seat("r", "max"), Seat("r", "quinn"), Seat("s", "sage")]
    assert await store.remove(Seat("r", "max")) is True
    assert await store.remove(Seat("r", "max")) is False
    assert await store.version() != v1
    assert await store.add(Seat("r", "sage"), 2, 3) is True  # the room has space again


async def test_sqlite_seats_survive_a_reopen(tmp_path: Path) -> None:
    store = SqliteSeatStore(tmp_path / "seats.sqlite3")
    await store.open()
    await check_store(store)
    await store.close()
    again = SqliteSeatStore(tmp_path / "seats.sqlite3")
    await again.open()
    assert (await again.seats())[1] == [Seat("r", "quinn"), Seat("r", "sage"), Seat("s", "sage")]
    await again.close()


async def test_redis_seats(redis_client: RedisClient) -> None:
    await redis_client.delete(ALL, ROOMS, VERSION)
    store = RedisSeatStore(redis_client)
    await check_store(store)
    # Another process's store sees the same seats.
    assert (await RedisSeatStore(redis_client).seats())[1] == [
        Seat("r", "quinn"), Seat("r", "sage"), Seat("s", "sage")]
    await redis_client.delete(ALL, ROOMS, VERSION)


class FakeAgent:
    """What the runtime needs of an agent: its seat, start and stop."""

    def __init__(self, seat: Seat) -> None:
        self.room = seat.room
        self.character = SimpleNamespace(name=seat.character)
        self.running = False

    async def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False


def seating(node: str, store: SeatStore, registry: MemoryNodeRegistry,
            clock: list[float]) -> Seating:
    make: Any = FakeAgent
    return Seating(store=store, node_id=node, limits=SeatLimits(), runtime=AgentRuntime(),
                   make_agent=make, registry=registry, period=1.0, clock=lambda: clock[0])


def running(s: Seating) -> set[Seat]:
    return {Seat(r, n) for r, n in s.runtime.agents}


async def test_one_owner_through_a_join_a_lapse_and_a_death() -> None:
    store, registry, clock = MemorySeatStore(), MemoryNodeRegistry(), [1000.0]
    seats = [Seat(f"r{i}", "quinn") for i in range(20)]
    for seat in seats:
        await store.add(seat, 8, 100)
    a = seating("a", store, registry, clock)

    async def step(*who: Seating, by: float = 1.0) -> None:
        clock[0] += by
        for s in who:
            await s.tick()

    await a.tick()
    assert running(a) == set()  # a newcomer settles first
    await step(a)
    await step(a)
    assert running(a) == set(seats)
    b = seating("b", store, registry, clock)
    await b.tick()  # b registers and settles; a drops b's seats at its next tick
    await a.tick()
    assert running(b) == set() and 0 < len(running(a)) < 20
    for _ in range(2):
        await step(a, b)
        assert not running(a) & running(b)
    assert running(a) | running(b) == set(seats) and running(b)
    # b is paused (it does not tick): its entry expires 3 s after its last
    # heartbeat, then a takes its seats, not before.
    b_had = running(b)
    await step(a)
    await step(a)
    assert not running(a) & b_had
    await step(a)
    assert running(a) == set(seats)
    # b resumes: its lease lapsed, so it is a newcomer; it stops everything
    # and waits while a drops its share again.
    await step(b, by=0.5)
    assert running(b) == set()
    await a.tick()
    for _ in range(2):
        await step(a, b)
        assert not running(a) & running(b)
    assert running(a) | running(b) == set(seats) and running(b)
    # The registry (Redis) unreachable for b: it owns nothing once its lease is up.
    registry.heartbeat = _down  # type: ignore[method-assign]
    await step(b)
    assert running(b)
    await step(b)
    assert running(b) == set()


async def _down(*args: Any) -> None:
    raise ConnectionError("down")
