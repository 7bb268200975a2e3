"""Presence: who is in a room, across the cluster, for rooms whose config
keeps it (``RoomPolicy.presence``).

Theory of operation
-------------------
A member is ``{"id", "name", "role"}`` (the role the user has in that room).
Each edge knows its own members of a room exactly (its connections, counted
per user: a user with three tabs is one member) and learns the other edges'
from the bus and the store. ``RoomPresence`` holds both for one room on one
edge, and is pure: no I/O, no clock, no event loop.

- ``add`` / ``remove``: a local connection of a user joined or left. Only
  the first connection of a user adds it and only the last removes it.
- ``local_delta``: once per tick, what changed in this edge's own list
  since it was last published (joins and leaves; a user who joined and left
  within one tick is in neither). The edge publishes it on the bus
  (``presence.<room>``) and writes its whole list to the store.
- ``apply_delta`` / ``replace_others``: another edge's published delta, or
  every edge's list as the store holds it (read when the room opens here and
  periodically, to heal what the at-most-once bus lost).
- ``update``: once per tick, what the local members must be told: the
  merged list (every edge, a user once) against what they were told last.
  So joins and leaves are coalesced per tick, and a user on two edges
  leaving one of them is no leave. Above the room's cap, the members are
  told once that the list is ``capped`` (counts only, from then on); back at
  or under the cap, they get the whole list again as joins.

``PresenceStore`` keeps each edge's list per room (one field per node, with
the time it was written); a list older than the TTL is a dead edge's and is
ignored. ``MemoryPresenceStore`` is the embedded one; Redis is in
``presence_redis.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Protocol

Member = dict[str, str]


def valid_member(obj: Any) -> bool:
    """A member map as peers publish it (defensive: the bus is shared)."""
    return (isinstance(obj, dict) and isinstance(obj.get("id"), str)
            and isinstance(obj.get("name"), str) and isinstance(obj.get("role"), str))


def merge(lists: Iterable[Iterable[Member]]) -> dict[str, Member]:
    """Every list's members, a user once (the first list naming it wins)."""
    merged: dict[str, Member] = {}
    for members in lists:
        for member in members:
            merged.setdefault(member["id"], member)
    return merged


class Update(NamedTuple):
    """What a room's local members are told in one tick: joins and leaves
    (ids), or ``capped`` (the list is over the cap: counts only); ``total``:
    the members the merged list has."""

    joins: list[Member]
    leaves: list[str]
    capped: bool
    total: int


class RoomPresence:
    """One room's presence on one edge (see the module docstring)."""

    __slots__ = ("counts", "local", "others", "published", "room", "shown")

    def __init__(self, room: str) -> None:
        self.room = room
        self.local: dict[str, Member] = {}
        self.counts: dict[str, int] = {}
        # node id -> user -> member: the other edges' lists.
        self.others: dict[str, dict[str, Member]] = {}
        # This edge's list as last published (bus and store).
        self.published: dict[str, Member] = {}
        # What the local members were told; None: that the list is capped.
        self.shown: dict[str, Member] | None = {}

    def add(self, member: Member) -> None:
        user = member["id"]
        self.counts[user] = self.counts.get(user, 0) + 1
        self.local.setdefault(user, member)

    def remove(self, user: str) -> None:
        held = self.counts.get(user, 0) - 1
        if held > 0:
            self.counts[user] = held
        else:
            self.counts.pop(user, None)
            self.local.pop(user, None)

    @property
    def empty(self) -> bool:
        """No local member left."""
        return not self.local

    def merged(self) -> dict[str, Member]:
        return merge([self.local.values(), *(m.values() for m in self.others.values())])

    def local_delta(self) -> tuple[list[Member], list[str]] | None:
        """This edge's joins and leaves since the last call; None if none."""
        joins = [m for u, m in self.local.items() if self.published.get(u) != m]
        leaves = [u for u in self.published if u not in self.local]
        if not joins and not leaves:
            return None
        self.published = dict(self.local)
        return joins, leaves

    def apply_delta(self, node: str, joins: Iterable[Member], leaves: Iterable[str]) -> None:
        members = self.others.setdefault(node, {})
        for user in leaves:
            members.pop(user, None)
        for member in joins:
            members[member["id"]] = member
        if not members:
            del self.others[node]

    def replace_others(self, lists: Mapping[str, Iterable[Member]], own_node: str) -> None:
        """Every other edge's list as the store holds it (``own_node``'s own
        field is skipped: this edge knows its members better)."""
        self.others = {node: {m["id"]: m for m in members}
                       for node, members in lists.items() if node != own_node}
        self.others = {n: m for n, m in self.others.items() if m}

    def update(self, cap: int) -> Update | None:
        """What the local members must be told now; None if nothing."""
        merged = self.merged()
        count = len(merged)
        if count > cap:
            if self.shown is None:
                return None
            self.shown = None
            return Update([], [], True, count)
        shown = self.shown if self.shown is not None else {}
        joins = [m for u, m in merged.items() if shown.get(u) != m]
        leaves = [u for u in shown if u not in merged]
        self.shown = merged
        if not joins and not leaves:
            return None
        return Update(joins, leaves, False, count)

    def listing(self, cap: int) -> list[Member] | None:
        """The merged list for a ``joined`` reply; None above the cap."""
        merged = self.merged()
        return None if len(merged) > cap else list(merged.values())


class PresenceStore(Protocol):
    """Each edge's member list per room (see the module docstring)."""

    async def put(self, room: str, node: str, members: list[Member], now: float,
                  ttl: float) -> None:
        """Write ``node``'s whole list of ``room`` (empty: remove it)."""

    async def lists(self, room: str, now: float, ttl: float) -> dict[str, list[Member]]:
        """Every edge's list of ``room`` written within ``ttl`` seconds."""


class MemoryPresenceStore:
    """In-process store: the embedded deployment, and tests."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, tuple[float, list[Member]]]] = {}

    async def put(self, room: str, node: str, members: list[Member], now: float,
                  ttl: float) -> None:
        fields = self._rooms.setdefault(room, {})
        if members:
            fields[node] = (now, list(members))
        else:
            fields.pop(node, None)
        if not fields:
            del self._rooms[room]

    async def lists(self, room: str, now: float, ttl: float) -> dict[str, list[Member]]:
        fields = self._rooms.get(room, {})
        for node in [n for n, (at, _) in fields.items() if at < now - ttl]:
            del fields[node]  # a dead edge's: pruned
        return {node: members for node, (_, members) in fields.items()}

    def __len__(self) -> int:
        return len(self._rooms)
