"""NatsBus over a real 3-node NATS cluster: subjects, order, subscribe only
while wanted, and failover when the connected node dies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from room_router.bus import node_subject, room_subject
from room_router.bus_nats import NatsBus, logical_subject, wire_subject
from tests.natsserver import NatsCluster


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


@pytest.fixture
async def buses(nats_cluster: NatsCluster) -> AsyncIterator[Callable[..., object]]:
    made: list[NatsBus] = []

    async def make(servers: list[str] | None = None, prefix: str = "t") -> NatsBus:
        bus = await NatsBus.connect(servers or nats_cluster.urls, prefix=prefix,
                                    name=f"test-{len(made)}")
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.close()


async def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError(f"{what} not within {timeout}s")
        await asyncio.sleep(0.01)


def test_subject_encoding_roundtrips_room_ids_with_dots_and_colons() -> None:
    for room in ("demo", "a.b", "a..b.", "x:y:z", "_", "__5F", "A-Z_09.:-"):
        wire = wire_subject(room_subject(room), "liveroom")
        assert wire.count(".") == 2  # prefix, kind, ONE token for the id
        assert not set(wire) & {" ", "*", ">", "\t"}
        assert logical_subject(wire, "liveroom") == room_subject(room)
    # Injective: the escape character itself is escaped.
    assert wire_subject("room._2E") != wire_subject("room..")
    assert wire_subject(node_subject("edge-1")) == "node.edge-1"


async def test_publish_reaches_subscribers_on_other_nodes_in_order(
        nats_cluster: NatsCluster, buses: Callable[..., object]) -> None:
    # The subscriber and the publisher sit on different NATS servers: the
    # messages cross a cluster route.
    sub_bus: NatsBus = await buses([nats_cluster.urls[0]])  # type: ignore[misc]
    pub_bus: NatsBus = await buses([nats_cluster.urls[2]])  # type: ignore[misc]
    got: list[tuple[str, bytes]] = []
    sub = sub_bus.subscribe(room_subject("big.room:1"), lambda s, p: got.append((s, p)))
    await sub_bus.flush()
    # Interest crosses the route asynchronously: probe until it arrives.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not got:
        assert loop.time() < deadline, "subscription never propagated"
        pub_bus.publish(room_subject("big.room:1"), b"probe")
        await pub_bus.flush()
        await asyncio.sleep(0.02)
    # Probes sent before the interest arrived are lost; a sentinel after them
    # (same publisher, so in order) says the rest have landed.
    pub_bus.publish(room_subject("big.room:1"), b"sentinel")
    await pub_bus.flush()
    await wait_for(lambda: got[-1][1] == b"sentinel", 2, "sentinel")
    got.clear()
    for i in range(500):
        pub_bus.publish(room_subject("big.room:1"), i.to_bytes(4, "big"))
    await pub_bus.flush()
    await wait_for(lambda: len(got) >= 500, 5, "500 messages")
    assert [s for s, _ in got] == [room_subject("big.room:1")] * 500
    assert [int.from_bytes(p, "big") for _, p in got] == list(range(500))
    # Unsubscribed: nothing more arrives (nor for a sibling room).
    sub.unsubscribe()
    await sub_bus.flush()
    pub_bus.publish(room_subject("big.room:1"), b"late")
    pub_bus.publish(room_subject("big.room"), b"other")
    await pub_bus.flush()
    await sub_bus.flush()
    assert len(got) == 500


async def test_prefix_isolates_deployments(buses: Callable[..., object]) -> None:
    a: NatsBus = await buses(prefix="one")  # type: ignore[misc]
    b: NatsBus = await buses(prefix="two")  # type: ignore[misc]
    got_a: list[bytes] = []
    a.subscribe(node_subject("n1"), lambda s, p: got_a.append(p))
    await a.flush()
    b.publish(node_subject("n1"), b"wrong deployment")
    a.publish(node_subject("n1"), b"mine")
    await b.flush()
    await a.flush()
    await wait_for(lambda: bool(got_a), 2, "own message")
    assert got_a == [b"mine"]


async def test_failover_when_the_connected_node_dies(
        nats_cluster: NatsCluster, buses: Callable[..., object]) -> None:
    """Kill the NATS node a bus is connected to: it reconnects to another,
    re-subscribes, and delivery resumes within 2 s."""
    sub_bus: NatsBus = await buses()  # type: ignore[misc]
    pub_bus: NatsBus = await buses()  # type: ignore[misc]
    got: list[int] = []
    sub_bus.subscribe(room_subject("r"), lambda s, p: got.append(int(p)))
    await sub_bus.flush()
    await wait_for(lambda: sub_bus.connected_url is not None, 2, "connected")
    victim = nats_cluster.urls.index(str(sub_bus.connected_url))
    seq = 0

    async def send_until(n: int, timeout: float) -> float:
        nonlocal seq
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while len(got) < n:
            assert loop.time() - t0 < timeout, f"delivery did not resume in {timeout}s"
            seq += 1
            pub_bus.publish(room_subject("r"), str(seq).encode())
            await asyncio.sleep(0.01)
        return loop.time() - t0

    await send_until(1, 5)
    try:
        nats_cluster.kill(victim)
        before = len(got)
        elapsed = await send_until(before + 5, 2.0)
        assert elapsed < 2.0
        assert sub_bus.connected_url != nats_cluster.urls[victim]
        assert sub_bus.metrics.events.labels("disconnected")._value.get() >= 1
        assert got == sorted(got)  # order kept across the failover
    finally:
        nats_cluster.restart(victim)


async def test_publish_never_blocks_and_backlog_is_bounded(nats_cluster: NatsCluster) -> None:
    bus = await NatsBus.connect(nats_cluster.urls, prefix="bound", max_backlog=10)
    try:
        # No await between the publishes: the pump cannot run, the backlog fills.
        for i in range(25):
            bus.publish(room_subject("r"), str(i).encode())
        assert bus.metrics.dropped._value.get() == 15
        await bus.flush()
    finally:
        await bus.close()


