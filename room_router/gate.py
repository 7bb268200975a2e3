"""The gate: whether this edge serves a room, else where its clients should go.

An edge of group G takes a join for room R when R's owner group (rendezvous
hashing over the live groups, ``room_router.placement``) is G, or when R is
big (members summed over the live edges at or over the threshold, or flagged
by a host with the ``placement`` section): big rooms are served everywhere.
Otherwise the join gets a ``redirect`` to the owner's URL(s).

``ClusterView`` holds the latest placement (replaced on every heartbeat) and
answers routes for ``GET /v1/route`` and for the gate. No I/O of its own: the
store and the online counts are the protocols it is given, the clock an
argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from room_router.nodes import OnlineCounts
from room_router.placement import PLACEMENT_SECTION, Placement, Route, flagged_spread
from state_versions.store import StateStore


class RoomGate(Protocol):
    async def redirect_for(self, room: str) -> Route | None:
        """None: this edge serves ``room``; else where to join it."""


class ClusterView:
    """The cluster as this process last saw it (updated by the heartbeat)."""

    def __init__(self, store: StateStore, online: OnlineCounts, *,
                 big_threshold: int, clock: Callable[[], float]) -> None:
        self.store = store
        self.online = online
        self.clock = clock
        self.placement = Placement([], big_threshold)

    async def is_big(self, room: str) -> bool:
        section = await self.store.section(room, PLACEMENT_SECTION)
        if section is not None and flagged_spread(section.value):
            return True
        if self.placement.big_threshold <= 0:
            return False
        totals = await self.online.totals([room], self.clock())
        return self.placement.is_big(totals.get(room, 0))

    async def route(self, room: str, client: str) -> Route:
        """Where a client of ``room`` connects (raises Unavailable when no
        edge is live)."""
        big = await self.is_big(room)
        return self.placement.route(room, big=big, client=client)


class PlacementGate:
    """``RoomGate`` of an edge node in ``group``."""

    def __init__(self, view: ClusterView, group: str) -> None:
        self.view = view
        self.group = group

    async def redirect_for(self, room: str) -> Route | None:
        placement = self.view.placement
        if not placement.groups or placement.owner_group(room) == self.group:
            # No view yet (before the first heartbeat): serve rather than
            # send the client nowhere.
            return None
        if await self.view.is_big(room):
            return None
        return placement.route(room, big=False)
