"""The in-memory node registry and online counts: expiry by time argument."""

from __future__ import annotations

import asyncio

from room_router.nodes import MemoryNodeRegistry, MemoryOnlineCounts, NodeInfo


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
