"""Seats: which character sits in which room, and which agents process
seats it (pure core; the stores are ``seats_sqlite`` and ``seats_redis``,
the loop that acts on them ``seating``).

A seat is a (room, character) pair, added and removed through the backend
API (``seats_http``) and kept in a store, so seats survive a restart of
every process. Who *runs* a seat is not stored: every agents process
computes it from the same two inputs, the stored seats and the live agents
processes of the node registry, by rendezvous hashing (``assign``). Each
seat goes to the process with the highest weight for it that still has
room under its bound (``per_process``); seats are taken in sorted order,
so every process that sees the same inputs computes the same owners with
no coordination and no lease to renew per seat. When a process dies, only
its seats move (each to its runner-up); when one joins, only the seats it
now wins move to it.

Why not a Redis lease per seat with fencing tokens: a fencing token is only
worth something if the resource checks it, and the resource here is the
room, on the edges; the edges would have to learn each seat's token and
refuse stale words. The registry already tells every process who is alive,
and the one-owner rule below (``seating``) keeps two owners from overlapping
without touching the edges.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from room_router.placement import rank
from wire.errors import TooManySeats

# The bounds' defaults (docs/AGENTS.md, "Seats"; docs/SECURITY.md).
MAX_SEATS_PER_ROOM = 8
MAX_SEATS_PER_PROCESS = 100
# Whatever the number of processes: a bound on the store and on a listing.
MAX_SEATS_TOTAL = 10_000


@dataclass(frozen=True, slots=True, order=True)
class Seat:
    room: str
    character: str

    @property
    def key(self) -> str:
        """The seat as one string: its rendezvous key and its store field.
        Room ids never contain a ``/`` (``wire.frames.ROOM_RE``)."""
        return f"{self.room}/{self.character}"

    @staticmethod
    def from_key(key: str) -> Seat:
        room, _, character = key.partition("/")
        return Seat(room, character)


@dataclass(frozen=True, slots=True)
class SeatLimits:
    per_room: int = MAX_SEATS_PER_ROOM
    per_process: int = MAX_SEATS_PER_PROCESS
    total: int = MAX_SEATS_TOTAL

    def capacity(self, processes: int) -> int:
        """How many seats ``processes`` live agents processes can run."""
        return min(self.total, self.per_process * max(1, processes))


class SeatStore(Protocol):
    async def open(self) -> None: ...

    async def add(self, seat: Seat, per_room: int, capacity: int) -> bool:
        """Store ``seat``; False if it was there already. Raises
        ``TooManySeats`` (nothing stored) past ``per_room`` seats in its
        room or ``capacity`` seats in all; checked and written at once."""

    async def remove(self, seat: Seat) -> bool:
        """Forget ``seat``; False if it was not there."""

    async def version(self) -> int:
        """A number that changes whenever the seats change (a cheap poll)."""

    async def seats(self) -> tuple[int, list[Seat]]:
        """The version and every seat, sorted."""

    async def close(self) -> None: ...


def refusal(seat: Seat, seats: Iterable[Seat], per_room: int,
            capacity: int) -> TooManySeats | None:
    """Why ``seat`` may not be added to ``seats`` (None: it may, or it is
    there already)."""
    existing = set(seats)
    if seat in existing:
        return None
    in_room = sum(1 for s in existing if s.room == seat.room)
    if in_room >= per_room:
        return too_many("room", per_room, seat.room)
    if len(existing) >= capacity:
        return too_many("cluster", capacity, seat.room)
    return None


def too_many(scope: str, limit: int, room: str) -> TooManySeats:
    if scope == "room":
        return TooManySeats(f"room {room!r} seats {limit} characters, the most it may",
                            scope=scope, limit=limit, room=room)
    return TooManySeats(f"the agents processes run {limit} seats, all they may; unseat one "
                        "or start another agents process", scope=scope, limit=limit, room=room)


def assign(seats: Iterable[Seat], processes: Iterable[str],
           per_process: int) -> dict[Seat, str | None]:
    """Each seat's owner among ``processes``: its highest rendezvous weight
    with fewer than ``per_process`` seats taken, seats in sorted order (None
    when every process is full)."""
    procs = sorted(set(processes))
    load = dict.fromkeys(procs, 0)
    owners: dict[Seat, str | None] = {}
    for seat in sorted(set(seats)):
        owners[seat] = None
        for proc in rank(procs, seat.key):
            if load[proc] < per_process:
                load[proc] += 1
                owners[seat] = proc
                break
    return owners


def mine(owners: Mapping[Seat, str | None], process: str) -> set[Seat]:
    return {seat for seat, owner in owners.items() if owner == process}


class MemorySeatStore:
    """The seats of one process that keeps nothing (tests)."""

    def __init__(self) -> None:
        self._seats: set[Seat] = set()
        self._version = 0

    async def open(self) -> None:
        return None

    async def add(self, seat: Seat, per_room: int, capacity: int) -> bool:
        err = refusal(seat, self._seats, per_room, capacity)
        if err is not None:
            raise err
        if seat in self._seats:
            return False
        self._seats.add(seat)
        self._version += 1
        return True

    async def remove(self, seat: Seat) -> bool:
        if seat not in self._seats:
            return False
        self._seats.discard(seat)
        self._version += 1
        return True

    async def version(self) -> int:
        return self._version

    async def seats(self) -> tuple[int, list[Seat]]:
        return self._version, sorted(self._seats)

    async def close(self) -> None:
        return None
