"""Seating: the loop that makes an agents process run the seats it owns.

Every ``period`` seconds (and at once after a seat is added or removed
here) the process:

1. renews its entry in the node registry (role ``agents``, a TTL of three
   periods) and reads the live agents processes back;
2. reads the seats when the store's version moved (or the live processes
   changed);
3. computes every seat's owner (``seats.assign``, rendezvous hashing with a
   per-process bound) and starts the ``RoomAgent`` of each seat it owns and
   does not run yet, and stops each it runs and no longer owns.

One owner per seat, never two at once, rests on two rules:

- *A newcomer waits.* A process takes no seat until it has been in the
  registry for ``settle`` (two periods): by then every other process has
  seen it and dropped the seats it wins, so a handover leaves a seat silent
  for up to a period rather than answered twice.
- *A process that cannot renew its entry owns nothing.* Its entry expires
  ``ttl`` after its last successful heartbeat, when the others take its
  seats; it stops its own one period before that (its "lease"), and once
  its lease lapsed it counts as a newcomer again. A process killed outright
  just disappears: its seats are taken over once its entry has expired,
  within ``ttl`` plus a period (4 s with the 1 s default).

Without a registry (``liveroom serve``, or ``liveroom agents`` without
``--redis``) the process is alone and owns every seat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from llm_agents.runtime import AgentRuntime, RoomAgent
from llm_agents.seats import Seat, SeatLimits, SeatStore, assign, mine
from room_router.nodes import NodeInfo, NodeRegistry

log = logging.getLogger("liveroom.agents")

AGENTS_ROLE = "agents"
# A seat's agent that has not joined its room within this many seconds is
# stopped and tried again at the next period.
START_TIMEOUT = 10.0


class Seating:
    def __init__(self, *, store: SeatStore, node_id: str, limits: SeatLimits,
                 runtime: AgentRuntime, make_agent: Callable[[Seat], RoomAgent],
                 registry: NodeRegistry | None = None, url: str = "",
                 period: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.node_id = node_id
        self.limits = limits
        self.runtime = runtime
        self._make_agent = make_agent
        self._registry = registry
        self.url = url
        self.period = period
        self.ttl = 3 * period
        self.settle = 2 * period
        self.clock = clock
        # What the last tick saw: the live agents processes and each seat's owner.
        self.processes: list[str] = [node_id]
        self.owners: dict[Seat, str | None] = {}
        self._version: int | None = None
        self._seats: list[Seat] = []
        self._lease_until = float("inf") if registry is None else 0.0
        self._since: float | None = None if registry is not None else 0.0
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the backend API's operations ---------------------------------------
    def capacity(self) -> int:
        return self.limits.capacity(len(self.processes))

    async def add(self, seat: Seat) -> bool:
        added = await self.store.add(seat, self.limits.per_room, self.capacity())
        self._kick.set()
        return added

    async def remove(self, seat: Seat) -> bool:
        removed = await self.store.remove(seat)
        self._kick.set()
        return removed

    async def room_seats(self, room: str) -> list[tuple[Seat, str | None]]:
        """The room's seats, each with the owner this process computed last
        (None: none yet, or every process is full)."""
        _, seats = await self.store.seats()
        return [(s, self.owners.get(s)) for s in seats if s.room == room]

    # -- the loop -------------------------------------------------------------
    async def start(self) -> None:
        await self.tick()
        self._task = asyncio.create_task(self._loop(), name="seating")

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.period)
            self._kick.clear()
            try:
                await self.tick()
            except Exception:
                log.exception("seating: tick failed")

    async def tick(self) -> None:
        now = self.clock()
        owning = await self._renew(now)
        version = await self.store.version()
        if version != self._version:
            self._version, self._seats = await self.store.seats()
        self.owners = assign(self._seats, self.processes, self.limits.per_process)
        await self._apply(mine(self.owners, self.node_id) if owning else set())

    async def _renew(self, now: float) -> bool:
        """Heartbeat and read the live processes: whether this process may
        own seats now (it holds its lease and has settled)."""
        registry = self._registry
        if registry is None:
            return True
        if now >= self._lease_until and self._since is not None:
            # Not renewed in time (Redis unreachable, or this process was
            # paused): the others may have its seats already.
            log.warning("seating: %s lost its lease: every seat stopped", self.node_id)
            self._since = None
        try:
            await registry.heartbeat(NodeInfo(self.node_id, self.node_id, self.url,
                                              (AGENTS_ROLE,)), self.ttl, now)
            self._lease_until = now + self.ttl - self.period
            if self._since is None:
                self._since = now
            self.processes = [n.node_id for n in await registry.live(now)
                              if AGENTS_ROLE in n.roles]
        except Exception as exc:
            log.warning("seating: the node registry is unavailable: %s", exc)
        return (self._since is not None and self.clock() < self._lease_until
                and now - self._since >= self.settle)

    async def _apply(self, wanted: set[Seat]) -> None:
        running = {Seat(room, name) for room, name in self.runtime.agents}
        for seat in sorted(running - wanted):
            await self.runtime.unseat(seat.room, seat.character)
            log.info("seating: %s stops %s in %s", self.node_id, seat.character, seat.room)
        new = sorted(wanted - running)
        if new:
            await asyncio.gather(*(self._start(seat) for seat in new))

    async def _start(self, seat: Seat) -> None:
        try:
            agent = self._make_agent(seat)
            await asyncio.wait_for(self.runtime.seat(agent), START_TIMEOUT)
        except Exception as exc:
            log.warning("seating: %s could not seat %s in %s (%s); again in %.1f s",
                        self.node_id, seat.character, seat.room, exc, self.period)
            return
        log.info("seating: %s seats %s in %s", self.node_id, seat.character, seat.room)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.runtime.stop()
        if self._registry is not None:
            # The others take this process's seats at their next period,
            # not after the entry's expiry.
            with contextlib.suppress(Exception):
                await self._registry.remove(self.node_id)
