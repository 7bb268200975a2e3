"""The node registry: which edge nodes are alive, in which group, at which URL.

Every edge node sends a heartbeat every ``period`` seconds; an entry expires
``ttl`` seconds (a few periods) after its last heartbeat, so a killed node
leaves the registry by itself. Placement (``room_router.placement``) reads the
live entries to hash rooms over the live edge groups.

Online counts ride on the same heartbeat: each node reports the member count
of every room it holds locally; a room's online count is the sum over the
live nodes' reports (a dead node's report expires with it).

The embedded deployment keeps both in memory; the distributed one keeps them
in Redis behind the same protocols. Time is an argument (``now``), so the
memory implementations are pure and unit-testable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One edge node as the registry knows it."""

    node_id: str
    group: str  # the placement unit: rooms hash over groups, not nodes
    url: str  # the public base URL clients connect to, e.g. "ws://10.0.0.5:8080/ws"
    roles: tuple[str, ...] = ("edge",)


class NodeRegistry(Protocol):
    async def heartbeat(self, node: NodeInfo, ttl: float, now: float) -> None:
        """Register or refresh ``node``; it expires ``ttl`` seconds after ``now``."""

    async def remove(self, node_id: str) -> None:
        """A clean shutdown: forget the node at once."""

    async def live(self, now: float) -> list[NodeInfo]:
        """The nodes whose heartbeat has not expired at ``now``, sorted by id."""


class OnlineCounts(Protocol):
    async def report(self, node_id: str, counts: Mapping[str, int], ttl: float,
                     now: float) -> None:
        """Replace ``node_id``'s local member counts (room -> count; rooms left
        out count 0 there). The report expires ``ttl`` seconds after ``now``."""

    async def totals(self, rooms: Iterable[str], now: float) -> dict[str, int]:
        """Each room's count summed over the unexpired reports."""

    async def rooms(self, prefix: str, after: str, limit: int,
                    now: float) -> list[tuple[str, int]]:
        """Rooms with members in an unexpired report whose id starts with
        ``prefix`` and sorts after ``after`` (a page's cursor), sorted by
        id, at most ``limit``, each with its count."""


class MemoryNodeRegistry:
    def __init__(self) -> None:
        self._nodes: dict[str, tuple[NodeInfo, float]] = {}

    async def heartbeat(self, node: NodeInfo, ttl: float, now: float) -> None:
        self._nodes[node.node_id] = (node, now + ttl)

    async def remove(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)

    async def live(self, now: float) -> list[NodeInfo]:
        for node_id, (_, expires) in list(self._nodes.items()):
            if expires <= now:
                del self._nodes[node_id]
        return sorted((n for n, _ in self._nodes.values()), key=lambda n: n.node_id)


class MemoryOnlineCounts:
    def __init__(self) -> None:
        self._reports: dict[str, tuple[dict[str, int], float]] = {}

    async def report(self, node_id: str, counts: Mapping[str, int], ttl: float,
                     now: float) -> None:
        self._reports[node_id] = ({r: c for r, c in counts.items() if c > 0}, now + ttl)

    async def totals(self, rooms: Iterable[str], now: float) -> dict[str, int]:
        live = self._live(now)
        return {room: sum(c.get(room, 0) for c in live) for room in rooms}

    async def rooms(self, prefix: str, after: str, limit: int,
                    now: float) -> list[tuple[str, int]]:
        live = self._live(now)
        return room_page({r for c in live for r in c}, prefix, after, limit,
                         lambda room: sum(c.get(room, 0) for c in live))

    def _live(self, now: float) -> list[dict[str, int]]:
        return [counts for counts, expires in self._reports.values() if expires > now]


def room_page(rooms: Iterable[str], prefix: str, after: str, limit: int,
              count: Callable[[str], int]) -> list[tuple[str, int]]:
    """One page of a room listing: the ids starting with ``prefix`` past
    ``after``, sorted, at most ``limit``, each with ``count(room)`` (those
    counting 0 are left out)."""
    ids = sorted(r for r in rooms if r.startswith(prefix) and r > after)
    page: list[tuple[str, int]] = []
    for room in ids:
        if len(page) >= limit:
            break
        n = count(room)
        if n > 0:
            page.append((room, n))
    return page
