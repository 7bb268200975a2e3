"""What an edge tells the backend about its rooms (room_router/events.py):
``room.opened`` / ``room.closed`` as they happen, ``members.changed`` once
per online tick.

Theory of operation
-------------------
Room events are per edge (``data.node``): an edge opens a room when its
first local member joins and closes it when its last leaves. A room spread
over several edges (a big room) opens and closes on each; a backend that
wants "the room is live anywhere" counts opens minus closes per room. Per
edge because no edge knows the cluster-wide truth without a round trip,
and an edge that dies is seen by the backend from the node registry, not
from events it can no longer send.

Member events only for rooms whose config turns ``presence`` on, chosen
when the room opens on this edge (a reload applies from the next open).
Each online tick (``tick``, every ``--online-interval``) compares the
room's local users (connections with a user, so a user with two tabs
counts once) with the last tick's and emits the difference as
``members.changed`` {joined, left}: the net change between two ticks (a
user who came and went within one tick does not show). Above the room's
``presence_cap`` local members, one event with ``over_cap: true`` and no
lists, then nothing until the room is under the cap again, when ``joined``
lists every local user (the backend resyncs its list). When the room
closes, the last lists are emitted before ``room.closed``.

Rooms without presence, and every room when events are off, cost nothing
here beyond one policy lookup when the room opens on this edge.
"""

from __future__ import annotations

from edge.fanout import Hub
from room_router.events import (
    MEMBERS_CHANGED,
    NO_EVENTS,
    ROOM_CLOSED,
    ROOM_OPENED,
    EventSink,
    members_changed,
    room_closed,
    room_opened,
)
from room_router.roomconfig import RoomPolicies


class MemberEvents:
    __slots__ = ("_events", "_hub", "_node", "_on", "_policies", "_seen")

    def __init__(self, node_id: str, events: EventSink, policies: RoomPolicies,
                 hub: Hub) -> None:
        self._node = node_id
        self._events = events
        self._on = events is not NO_EVENTS
        self._policies = policies
        self._hub = hub
        # Rooms with presence -> their users at the last tick (None: over the cap).
        self._seen: dict[str, set[str] | None] = {}

    def opened(self, room: str) -> None:
        if not self._on:
            return
        self._events.emit(room, ROOM_OPENED, room_opened(self._node))
        if self._policies.policy(room).presence:
            self._seen[room] = set()

    def closed(self, room: str) -> None:
        if not self._on:
            return
        seen = self._seen.pop(room, None)
        if seen:
            self._emit_changes(room, set(), seen)
        self._events.emit(room, ROOM_CLOSED, room_closed(self._node))

    def tick(self) -> None:
        for room, seen in list(self._seen.items()):
            local = self._hub.rooms.get(room)
            if local is None:
                continue
            if len(local.members) > self._policies.policy(room).presence_cap:
                if seen is not None:
                    self._seen[room] = None
                    self._events.emit(room, MEMBERS_CHANGED, {
                        "node": self._node, "joined": [], "left": [], "over_cap": True})
                continue
            users = {c.user for c in local.members if c.user}
            before = seen or set()
            if users != before:
                self._emit_changes(room, users - before, before - users)
            self._seen[room] = users

    def _emit_changes(self, room: str, joined: set[str], left: set[str]) -> None:
        for data in members_changed(self._node, joined, left):
            self._events.emit(room, MEMBERS_CHANGED, data)
