"""The in-memory node registry and online counts: expiry by time argument."""

from __future__ import annotations

import asyncio

from room_router.nodes import MemoryNodeRegistry, MemoryOnlineCounts, NodeInfo
from room_router.registry import MemoryConnectionRegistry


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_nodes_expire_after_ttl_and_are_sorted() -> None:
    reg = MemoryNodeRegistry()
    b = NodeInfo("b", "g1", "ws://b/ws")
    a = NodeInfo("a", "g1", "ws://a/ws")
    run(reg.heartbeat(b, ttl=3, now=0))
    run(reg.heartbeat(a, ttl=3, now=1))
    assert run(reg.live(2)) == [a, b]
    assert run(reg.live(3.5)) == [a]  # b expired at 3
    run(reg.remove("a"))
    assert run(reg.live(3.5)) == []


def test_online_counts_sum_over_unexpired_reports() -> None:
    oc = MemoryOnlineCounts()
    run(oc.report("n1", {"r": 2, "s": 1}, ttl=3, now=0))
    run(oc.report("n2", {"r": 5}, ttl=3, now=2))
    assert run(oc.totals(["r", "s", "t"], now=2)) == {"r": 7, "s": 1, "t": 0}
    # n1's report expires; a fresh report replaces the old one whole.
    assert run(oc.totals(["r", "s"], now=4)) == {"r": 5, "s": 0}
    run(oc.report("n2", {"s": 4}, ttl=3, now=4))
    assert run(oc.totals(["r", "s"], now=4)) == {"r": 0, "s": 4}


def test_the_memory_connection_registry_refreshes_as_the_interface_says() -> None:
    """``refresh`` is part of ``ConnectionRegistry``: in memory nothing
    expires, so it re-adds what the node holds and counts the users."""
    async def run() -> None:
        reg = MemoryConnectionRegistry()
        await reg.add("ann", "e1", 1)
        assert await reg.refresh("e1", [("ann", 1), ("ann", 2), ("bob", 3)]) == 2
        assert await reg.nodes("bob") == {"e1"}
        await reg.remove("ann", "e1", 1)
        assert await reg.nodes("ann") == {"e1"}  # cid 2 is still there
        assert await reg.refresh("e2", []) == 0

    asyncio.run(run())
