"""Placement: which edge group serves a room, and where a client connects.

Theory of operation
-------------------
Rooms are placed over edge *groups* (a group is a set of edge nodes that
serve the same rooms, e.g. one per machine or zone) by rendezvous hashing
(highest random weight, HRW): every group gets a score ``h(group, room)``
and the room's owner is the group with the highest score. Every process
that sees the same live groups computes the same owner, with no
coordination and no table to keep. When a group joins, the only rooms that
move are those it now wins (about 1/(n+1) of them); when a group leaves,
only its own rooms move, each to its runner-up.

Small rooms live on their owner group (within it, HRW over the node ids
picks the node clients are sent to first). A *big* room, one whose members
(summed over the live edges) reach ``big_threshold`` or that a host flagged
(section ``placement`` = ``{"spread": true}``), is spread over all groups:
the route answer spreads clients by hashing a client key over the groups,
and every edge serves it (one bus message per edge per action, whatever the
audience).

Pure: no I/O, no clock; the live nodes and the client key come in as
arguments. The hash is BLAKE2b (stable across processes and machines,
unlike ``hash()``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from room_router.nodes import NodeInfo
from wire.errors import Unavailable

# A host marks a room big (spread over every group) with this state section.
PLACEMENT_SECTION = "placement"


def score(key: str, room: str) -> int:
    """The HRW weight of ``key`` (a group or node id) for ``room``."""
    digest = hashlib.blake2b(f"{key}\x00{room}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank(keys: Iterable[str], room: str) -> list[str]:
    """``keys`` from the highest weight for ``room`` to the lowest (ties,
    which a 64-bit hash makes vanishingly rare, broken by name)."""
    return sorted(keys, key=lambda k: (score(k, room), k), reverse=True)


def owner(room: str, groups: Iterable[str]) -> str | None:
    best: tuple[int, str] | None = None
    for g in groups:
        cand = (score(g, room), g)
        if best is None or cand > best:
            best = cand
    return None if best is None else best[1]


def flagged_spread(section_value: Any) -> bool:
    """Whether the value of the ``placement`` section asks for spreading."""
    return isinstance(section_value, Mapping) and section_value.get("spread") is True


@dataclass(frozen=True, slots=True)
class Route:
    """Where a client should connect for a room: ``urls`` in order of
    preference (the first is the answer; the others are fallbacks)."""

    room: str
    urls: tuple[str, ...]
    spread: bool
    group: str  # the group of urls[0]

    def to_json(self) -> dict[str, Any]:
        return {"room": self.room, "url": self.urls[0], "urls": list(self.urls),
                "spread": self.spread, "group": self.group}


class Placement:
    """A view of the live edge groups at one moment (from the node registry)."""

    __slots__ = ("big_threshold", "groups")

    def __init__(self, nodes: Iterable[NodeInfo], big_threshold: int = 5_000) -> None:
        groups: dict[str, list[NodeInfo]] = {}
        for n in nodes:
            if "edge" in n.roles:
                groups.setdefault(n.group, []).append(n)
        self.groups: dict[str, tuple[NodeInfo, ...]] = {
            g: tuple(sorted(ns, key=lambda n: n.node_id)) for g, ns in sorted(groups.items())}
        self.big_threshold = big_threshold

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Placement) and self.groups == other.groups

    __hash__ = None  # type: ignore[assignment]

    def is_big(self, members: int, flagged: bool = False) -> bool:
        return flagged or (self.big_threshold > 0 and members >= self.big_threshold)

    def owner_group(self, room: str) -> str | None:
        return owner(room, self.groups)

    def serves(self, room: str, group: str, big: bool) -> bool:
        """Whether an edge of ``group`` may take members of ``room``."""
        return big or self.owner_group(room) == group

    def route(self, room: str, *, big: bool, client: str = "") -> Route:
        """The edge URL(s) for a client of ``room``. ``client`` spreads the
        clients of a big room over the groups (any stable or random key)."""
        if not self.groups:
            raise Unavailable("no live edge node", retry_after=1)
        if not big:
            g = self.owner_group(room)
            assert g is not None
            nodes = {n.node_id: n for n in self.groups[g]}
            urls = tuple(nodes[k].url for k in rank(nodes, room))
            return Route(room, urls, False, g)
        key = f"{room}\x00{client}"
        ordered = rank(self.groups, key)
        picks: list[str] = []
        for g in ordered:
            members = {n.node_id: n for n in self.groups[g]}
            picks.append(members[rank(members, key)[0]].url)
        return Route(room, tuple(picks), True, ordered[0])

    def moved(self, rooms: Iterable[str], before: Placement) -> dict[str, str]:
        """Of ``rooms``, those whose owner group differs from ``before``,
        each with its new owner."""
        out: dict[str, str] = {}
        for room in rooms:
            now = self.owner_group(room)
            if now is not None and now != before.owner_group(room):
                out[room] = now
        return out


def rooms_leaving(rooms: Iterable[str], *, group: str, before: Placement,
                  after: Placement) -> dict[str, Route]:
    """The heartbeat's room-move decision, pure: when the live groups changed
    from ``before`` to ``after`` (and some are still live), each of ``rooms``
    (an edge of ``group`` holds members there) that ``group`` no longer owns,
    with the route its members are redirected to (reason ``moved``). The
    caller leaves out the big rooms, which every group serves; whether a room
    is big is the state store's and the online counts' to say."""
    if after == before or not after.groups:
        return {}
    return {room: after.route(room, big=False) for room in rooms
            if after.owner_group(room) != group}
