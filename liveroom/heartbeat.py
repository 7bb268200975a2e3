"""The heartbeat of a distributed node (``liveroom edge``, ``router``, ``cdn``).

Every ``period`` seconds a node registers itself (id, group, public URL) with
a TTL of three periods; an edge also reports its local member counts and
re-asserts its connections in the connection registry
(``ConnectionRegistry.refresh``). Then the node reads the live nodes back and
builds the placement (``room_router.placement``): joins of rooms another group
owns get a ``redirect`` (``room_router.gate``); when the live groups change,
the members of the local rooms that moved away (``rooms_leaving``, a pure
function; big rooms stay, every group serves them) get a ``redirect`` (reason
``moved``) to the new owner and rejoin there with their versions. The online
count each room's members see is the sum over the live edges' reports.
Because every heartbeat re-writes everything, a restarted Redis is whole
again one period later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from edge.node import EdgeNode
from liveroom.services import Services
from room_router.gate import ClusterView
from room_router.nodes import NodeInfo
from room_router.placement import Placement, rooms_leaving

log = logging.getLogger("liveroom.distributed")


class Heartbeat:
    """Register this node, report its counts, read the cluster back; every
    ``period`` seconds on a loop timer (one task at a time, never two)."""

    def __init__(self, *, info: NodeInfo, services: Services, view: ClusterView,
                 node: EdgeNode | None, period: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.info = info
        self.services = services
        self.view = view
        self.node = node
        self.period = period
        self.ttl = 3 * period
        self.clock = clock
        self.beats = 0
        self.failures = 0
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._tick()

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self.beat())
        self._handle = loop.call_later(self.period, self._tick)

    async def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        try:
            await self.services.nodes.remove(self.info.node_id)
        except Exception:
            log.warning("could not deregister %s", self.info.node_id, exc_info=True)

    async def beat(self) -> None:
        # Two tries: after a Redis restart the first command meets a pooled
        # connection the server closed, and fails; that connection is
        # dropped, so a second try at once gets a fresh one. Without it the
        # registries would be rebuilt only one period later.
        for attempt in (1, 2):
            try:
                await self._beat()
                self.beats += 1
                return
            except Exception as exc:
                # Redis or the network is away: keep serving what we have,
                # try again next period (everything is re-written each time).
                self.failures += 1
                if attempt == 2:
                    log.warning("heartbeat failed: %s: %s", type(exc).__name__, exc)

    async def _beat(self) -> None:
        s, node = self.services, self.node
        now = self.clock()
        await s.nodes.heartbeat(self.info, self.ttl, now)
        local: dict[str, int] = {}
        if node is not None:
            local = node.local_counts()
            await s.online.report(self.info.node_id, local, self.ttl, now)
            await s.registry.refresh(self.info.node_id, node.local_connections())
        live = await s.nodes.live(now)
        before, after = self.view.placement, Placement(live, self.view.placement.big_threshold)
        self.view.placement = after
        if node is None:
            return
        for room, route in rooms_leaving(node.hub.rooms, group=self.info.group,
                                         before=before, after=after).items():
            # Big rooms are served by every group: their members stay.
            if await self.view.is_big(room):
                continue
            told = node.redirect_room(room, route.urls)
            log.info("room %s moved to group %s: %d members redirected", room, route.group,
                     told)
        if local:
            totals = await s.online.totals(list(local), now)
            node.online_elsewhere = {r: max(0, totals.get(r, 0) - n) for r, n in local.items()}
