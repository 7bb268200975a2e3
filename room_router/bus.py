"""The bus: where a room's actions and state notices travel between edges.

Subjects: ``room.<room id>`` carries a room's actions and state changes;
``node.<node id>`` carries peer deliveries for the connections one edge node
holds; ``presence.<room id>`` carries the edges' presence deltas of a room
that keeps presence (``room_router/presence.py``); ``control.all`` carries
moderation (bans, kicks, closes) to every edge. Payloads are already-encoded
msgpack bytes: a receiving edge frames them as they are and re-encodes
nothing it can forward.

The embedded deployment uses ``MemoryBus`` (one process); the distributed
one puts NATS behind the same interface.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Handler = Callable[[str, bytes], None]


def room_subject(room: str) -> str:
    return f"room.{room}"


def node_subject(node: str) -> str:
    return f"node.{node}"


def presence_subject(room: str) -> str:
    """An edge's presence deltas of a room (``room_router/presence.py``)."""
    return f"presence.{room}"
# Moderation's one broadcast subject (room_router/moderation.py): every edge
# subscribes at start. ``<kind>.<id>`` as every logical subject is.
CONTROL_SUBJECT = "control.all"


def control_subject() -> str:
    return CONTROL_SUBJECT


class Subscription(Protocol):
    def unsubscribe(self) -> None: ...


class Bus(Protocol):
    def publish(self, subject: str, payload: bytes) -> None:
        """Fire and forget: at most once, never waits for a subscriber."""

    def subscribe(self, subject: str, handler: Handler) -> Subscription: ...

    async def settled(self) -> None:
        """Return once the subscriptions made so far are in place at the
        broker (best effort, bounded): a member told ``joined`` then gets
        what is published after. Never raises."""


class _MemorySubscription:
    __slots__ = ("_bus", "handler", "subject")

    def __init__(self, bus: MemoryBus, subject: str, handler: Handler) -> None:
        self._bus = bus
        self.subject = subject
        self.handler = handler

    def unsubscribe(self) -> None:
        self._bus._remove(self)


class MemoryBus:
    """In-process bus. ``publish`` calls the subscribers synchronously: in one
    process that is the shortest path from a sender to the fan-out loop."""

    def __init__(self) -> None:
        self._subs: dict[str, list[_MemorySubscription]] = {}

    def publish(self, subject: str, payload: bytes) -> None:
        for sub in self._subs.get(subject, ()):
            sub.handler(subject, payload)

    def subscribe(self, subject: str, handler: Handler) -> Subscription:
        sub = _MemorySubscription(self, subject, handler)
        # Copy-on-write so that a handler may (un)subscribe during publish.
        self._subs[subject] = [*self._subs.get(subject, ()), sub]
        return sub

    async def settled(self) -> None:
        """In one process a subscription is in place at once."""

    def _remove(self, sub: _MemorySubscription) -> None:
        subs = [s for s in self._subs.get(sub.subject, ()) if s is not sub]
        if subs:
            self._subs[sub.subject] = subs
        else:
            self._subs.pop(sub.subject, None)

    def subjects(self) -> list[str]:
        return sorted(self._subs)
