"""Presence on one edge: the member lists of the local rooms that keep
presence (``RoomPolicy.presence``), kept cluster-wide.

Theory of operation
-------------------
The pure part is ``room_router.presence.RoomPresence`` (one per room with
local members, here ``views``); this is its adapter to the node's hub, the
bus, the store and the clock.

- A connection joining a presence room adds its user (``join``; the node
  calls it for joins of rooms whose policy keeps presence, so other rooms
  pay nothing); any way a connection leaves a room (``leave``, a close, a
  slow-consumer close, a redirect, a kick) calls ``left``. Both only mark
  the room dirty: nothing is sent per join or leave.
- The first local member of a room subscribes this edge to the room's
  ``presence.<room>`` subject and loads every edge's list from the store
  before its ``joined`` goes out, so a newcomer sees the whole room.
- ``tick`` (on the node's online timer) goes over the dirty rooms: this
  edge's own changes are published on the bus (a delta) and its whole list
  queued for the store; then the room's local members get ONE ``presence``
  frame with the merged changes since the last tick (``RoomPresence.update``).
  A room whose last local member left publishes its leaves, removes its
  field from the store and is dropped.
- Every ``resync`` seconds the tick re-asserts this edge's lists in the
  store (a dead edge's lists go stale after ``ttl`` and are ignored) and
  reads every edge's lists back: a delta the bus lost (NATS is at most
  once) or a dead edge's members are healed then.
- Store I/O runs in one task at a time, off the tick: a tick never awaits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import msgpack

from edge.auth import Identity
from edge.fanout import Conn, FanoutResult, Hub
from edge.metrics import Metrics
from plumbing.ratelog import RateLimitedLog
from room_router.bus import Bus, Subscription, presence_subject
from room_router.presence import Member, PresenceStore, RoomPresence, merge, valid_member
from room_router.roomconfig import RoomPolicies
from wire.encoded import Encoded
from wire.errors import NotFound
from wire.outgoing import PRESENCE_CAPPED, presence_frame

log = logging.getLogger("liveroom.presence")

# Seconds between re-assertions and re-reads of the store; seconds after
# which a list not re-asserted is a dead edge's.
RESYNC_SECONDS = 10.0
TTL_SECONDS = 30.0
# A delta from the bus larger than this is ignored (the cap's bound is 10,000).
_MAX_DELTA = 20_000


class Presence:
    def __init__(self, *, node_id: str, store: PresenceStore, bus: Bus, hub: Hub,
                 policies: RoomPolicies, metrics: Metrics, errlog: RateLimitedLog,
                 clock: Callable[[], float], monotonic: Callable[[], float],
                 account: Callable[[FanoutResult, float], None],
                 resync: float = RESYNC_SECONDS, ttl: float = TTL_SECONDS) -> None:
        self.node_id = node_id
        self.store = store
        self.bus = bus
        self.hub = hub
        self.policies = policies
        self.metrics = metrics
        self.errlog = errlog
        self.clock = clock
        self._monotonic = monotonic
        self._account = account
        self.resync = resync
        self.ttl = ttl
        self.views: dict[str, RoomPresence] = {}
        self._subs: dict[str, Subscription] = {}
        # (connection id, room) -> user: which connections are counted.
        self._conns: dict[tuple[int, str], str] = {}
        self._dirty: set[str] = set()
        self._next_resync = 0.0
        # Store work waiting for the one task: lists to write, rooms to read.
        self._writes: dict[str, list[Member]] = {}
        self._reads: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    # -- members in and out ----------------------------------------------
    def member(self, ident: Identity, room: str) -> Member | None:
        """How ``room``'s presence shows the user (its role in the room),
        or None when the room keeps no presence: other rooms pay nothing."""
        if not self.policies.policy(room).presence:
            return None
        return ident.public_in(ident.role_in(room))

    async def join(self, conn: Conn, room: str, member: Member) -> list[Member] | str:
        """Count ``conn``'s user in ``room``; the list for its ``joined``
        (``PRESENCE_CAPPED`` above the room's cap)."""
        view = self.views.get(room)
        opened = view is None
        if view is None:
            view = self.views[room] = RoomPresence(room)
            self._subs[room] = self.bus.subscribe(presence_subject(room), self._on_delta)
        if (conn.cid, room) not in self._conns:
            self._conns[conn.cid, room] = member["id"]
            view.add(member)
            self._dirty.add(room)
        if opened:
            await self._load(view)
        listing = view.listing(self.policies.policy(room).presence_cap)
        return PRESENCE_CAPPED if listing is None else listing

    def left(self, conn: Conn, room: str) -> None:
        """``conn`` is out of ``room``, however it left. Idempotent."""
        user = self._conns.pop((conn.cid, room), None)
        if user is None:
            return
        view = self.views.get(room)
        if view is not None:
            view.remove(user)
            self._dirty.add(room)

    async def _load(self, view: RoomPresence) -> None:
        try:
            lists = await self.store.lists(view.room, self.clock(), self.ttl)
        except Exception as exc:
            # The store is away: this edge's members for now; the resync heals.
            self.errlog.exception(f"presence:load:{type(exc).__name__}",
                                  "presence of room %r could not be read", view.room[:64],
                                  exc=exc)
            return
        view.replace_others(lists, self.node_id)
        self._dirty.add(view.room)  # the next tick tells the members

    # -- the bus -----------------------------------------------------------
    def _on_delta(self, subject: str, payload: bytes) -> None:
        room = subject[len("presence."):]
        view = self.views.get(room)
        if view is None:
            return
        try:
            obj = msgpack.unpackb(payload, raw=False)
            node, joins, leaves = obj["node"], obj["joins"], obj["leaves"]
        except Exception:
            return
        if node == self.node_id or not isinstance(node, str) or \
                not isinstance(joins, list) or not isinstance(leaves, list) or \
                len(joins) + len(leaves) > _MAX_DELTA:
            return  # our own (the memory bus echoes it), or not a delta
        view.apply_delta(node, [m for m in joins if valid_member(m)],
                         [u for u in leaves if isinstance(u, str)])
        self._dirty.add(room)

    # -- the tick ----------------------------------------------------------
    def tick(self) -> None:
        """Publish this edge's changes, tell the local members theirs (one
        frame per room), and start the store's work (see the docstring)."""
        now = self._monotonic()
        dirty, self._dirty = self._dirty, set()
        for room in dirty:
            view = self.views.get(room)
            if view is not None:
                self._tick_room(view, now)
        wall = self.clock()
        if wall >= self._next_resync:
            self._next_resync = wall + self.resync
            for room, view in self.views.items():
                self._writes[room] = list(view.local.values())
                self._reads.add(room)
        if (self._writes or self._reads) and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._store_work())

    def _tick_room(self, view: RoomPresence, now: float) -> None:
        room = view.room
        delta = view.local_delta()
        if delta is not None:
            joins, leaves = delta
            self.bus.publish(presence_subject(room), msgpack.packb(
                {"node": self.node_id, "joins": joins, "leaves": leaves}))
            self._writes[room] = list(view.local.values())
        if view.empty:
            self._drop(room)
            return
        update = view.update(self.policies.policy(room).presence_cap)
        if update is not None:
            enc = Encoded(presence_frame(room, update.joins, update.leaves, update.capped,
                                         update.total))
            result = self.hub.broadcast(room, enc, now)
            self.metrics.presence_frames.inc(result.sent)
            self._account(result, now)

    def _drop(self, room: str) -> None:
        del self.views[room]
        self._reads.discard(room)
        sub = self._subs.pop(room, None)
        if sub is not None:
            sub.unsubscribe()

    async def _store_work(self) -> None:
        """Write the queued lists, read the queued rooms; until none is left."""
        while self._writes or self._reads:
            writes, self._writes = self._writes, {}
            reads, self._reads = self._reads, set()
            now = self.clock()
            for room, members in writes.items():
                try:
                    await self.store.put(room, self.node_id, members, now, self.ttl)
                except Exception as exc:
                    self.errlog.exception(f"presence:put:{type(exc).__name__}",
                                          "presence of room %r could not be written",
                                          room[:64], exc=exc)
            for room in reads:
                view = self.views.get(room)
                if view is not None:
                    await self._load(view)

    def stop(self) -> None:
        for sub in self._subs.values():
            sub.unsubscribe()
        self._subs.clear()
        if self._task is not None:
            self._task.cancel()

    # -- reads -------------------------------------------------------------
    async def snapshot(self, room: str) -> dict[str, Any]:
        """``GET /v1/rooms/{room}/presence``: the room's members over the
        cluster; NotFound for a room whose config keeps no presence."""
        policy = self.policies.policy(room)
        if not policy.presence:
            raise NotFound(f"room {room!r} keeps no presence (see the rooms config)")
        lists = await self.store.lists(room, self.clock(), self.ttl)
        view = self.views.get(room)
        if view is not None:
            # This edge's own list is the live one, not what it last wrote.
            lists[self.node_id] = list(view.local.values())
        merged = merge(lists[n] for n in sorted(lists))
        if len(merged) > policy.presence_cap:
            return {"room": room, "count": len(merged), "capped": True}
        return {"room": room, "count": len(merged), "members": list(merged.values())}

    def local_lists(self) -> dict[str, list[Member]]:
        """This edge's member list of each presence room it serves."""
        return {room: list(view.local.values()) for room, view in self.views.items()}
