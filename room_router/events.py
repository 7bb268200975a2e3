"""Events to the backend: what happened in the rooms, delivered at least once.

An event is a small JSON object (docs/BACKEND.md, "Events")::

    {"id": "3f2a9c1b7e44-1a", "type": "member.joined", "room": "demo",
     "ts": 1733320000.123, "data": {...}}

``id`` is unique across the cluster (a random 48-bit prefix per emitting
process, then a counter: the scheme of the action ids, wire/outgoing.py), so
a backend deduplicates redeliveries by it. Events of one room from one
process are delivered in the order they were emitted (the outbox keeps one
sequence; JetStream keeps a publisher's order).

``EventSink.emit`` is what the rest of the code calls, from the hot path
too: it is synchronous, never awaits and never raises into its caller; it
stamps the event (id, ts) and hands it to the sink's own machinery (a
memory buffer flushed to the SQLite outbox, room_router/outbox.py; a
bounded queue published to JetStream, room_router/events_jetstream.py).
``NO_EVENTS`` is the sink when events are off: it does nothing at all.

The builders below (``room_opened`` ... ``action_settled``) are the one
place each event type's ``data`` is shaped, so the producers (the edge,
moderation, the publish proxy) and the documentation agree.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

ROOM_OPENED = "room.opened"
ROOM_CLOSED = "room.closed"
MEMBERS_CHANGED = "members.changed"
MODERATION = "moderation"
ACTION_SETTLED = "action.settled"

EVENT_TYPES = frozenset({ROOM_OPENED, ROOM_CLOSED, MEMBERS_CHANGED, MODERATION,
                         ACTION_SETTLED})

# One members.changed event lists at most this many users joined plus left;
# a tick with more changes is split into several events (in order).
MAX_MEMBERS_PER_EVENT = 500


class EventSink(Protocol):
    def emit(self, room: str, type: str, data: Mapping[str, Any]) -> None:
        """Record one event of ``room``; never awaits, never raises."""


class NoEvents:
    """Events off: nothing recorded, nothing paid."""

    __slots__ = ()

    def emit(self, room: str, type: str, data: Mapping[str, Any]) -> None:
        return None


NO_EVENTS = NoEvents()


class EventIds:
    """Event ids: a random 48-bit prefix per process, then a hex counter
    (unique across processes and restarts, increasing within a process)."""

    __slots__ = ("_next", "_prefix")

    def __init__(self, prefix: str | None = None) -> None:
        self._prefix = (prefix or secrets.token_hex(6)) + "-"
        self._next = 0

    def next(self) -> str:
        self._next += 1
        return f"{self._prefix}{self._next:x}"


def event(event_id: str, room: str, type: str, ts: float,
          data: Mapping[str, Any]) -> dict[str, Any]:
    """One event as the backend receives it."""
    return {"id": event_id, "type": type, "room": room, "ts": ts, "data": dict(data)}


def encode_event(obj: Mapping[str, Any]) -> bytes:
    """The event's stored and sent bytes: compact JSON, UTF-8."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class Stamper:
    """What every sink does first in ``emit``: the id and the time."""

    __slots__ = ("_clock", "_ids")

    def __init__(self, clock: Callable[[], float], ids: EventIds | None = None) -> None:
        self._clock = clock
        self._ids = ids or EventIds()

    def stamp(self, room: str, type: str, data: Mapping[str, Any]) -> tuple[str, bytes]:
        """(id, encoded event)."""
        event_id = self._ids.next()
        return event_id, encode_event(event(event_id, room, type, round(self._clock(), 6),
                                            data))


# -- the event types' data ---------------------------------------------------
def room_opened(node: str) -> dict[str, Any]:
    """The room's first member joined on edge ``node`` (per edge: a room
    spread over several edges opens on each, see docs/BACKEND.md)."""
    return {"node": node}


def room_closed(node: str) -> dict[str, Any]:
    """The room's last member on edge ``node`` left."""
    return {"node": node}


def members_changed(node: str, joined: Iterable[str],
                    left: Iterable[str]) -> list[dict[str, Any]]:
    """The users who came into and went out of a room on edge ``node`` since
    the last tick (first connection in, last connection out), as one or more
    events of at most ``MAX_MEMBERS_PER_EVENT`` users each."""
    changes = [("joined", u) for u in sorted(joined)] + [("left", u) for u in sorted(left)]
    out: list[dict[str, Any]] = []
    for i in range(0, len(changes), MAX_MEMBERS_PER_EVENT):
        part = changes[i:i + MAX_MEMBERS_PER_EVENT]
        out.append({"node": node, "joined": [u for k, u in part if k == "joined"],
                    "left": [u for k, u in part if k == "left"]})
    return out


def moderation(op: str, target: str, by: str, *, duration: float | None = None,
               action_id: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """A host's or moderator's act: ``op`` is ban, unban, mute, unmute, kick
    or retract; ``target`` the user (or, for retract, the action's sender)."""
    data: dict[str, Any] = {"op": op, "target": target, "by": by}
    if duration is not None:
        data["duration"] = duration
    if action_id is not None:
        data["action_id"] = action_id
    if reason is not None:
        data["reason"] = reason
    return data


def action_settled(action_id: str, kind: str, sender: str, outcome: str,
                   detail: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A proxied action's end: ``outcome`` is published, refused or failed."""
    data: dict[str, Any] = {"action_id": action_id, "kind": kind, "from": sender,
                            "outcome": outcome}
    if detail:
        data["detail"] = dict(detail)
    return data


class MemorySink:
    """Events kept in a list (tests, and a process that wants to look)."""

    __slots__ = ("_stamper", "events")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._stamper = Stamper(clock)
        self.events: list[dict[str, Any]] = []

    def emit(self, room: str, type: str, data: Mapping[str, Any]) -> None:
        _, raw = self._stamper.stamp(room, type, data)
        self.events.append(json.loads(raw))
