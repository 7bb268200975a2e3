"""Seats (llm_agents/seats.py): who runs which seat, and the bounds."""

from __future__ import annotations

from collections import Counter

import pytest

from llm_agents.seats import Seat, SeatLimits, assign, mine, refusal, too_many
from wire.errors import TooManySeats

SEATS = [Seat(f"room-{i}", c) for i in range(10) for c in ("quinn", "max")]


def test_every_seat_has_one_owner_and_every_process_computes_the_same() -> None:
    a = assign(SEATS, ["agents-1", "agents-2"], 100)
    b = assign(reversed(SEATS), ["agents-2", "agents-1"], 100)
    assert a == b
    assert set(a) == set(SEATS) and all(o in ("agents-1", "agents-2") for o in a.values())
    assert mine(a, "agents-1") | mine(a, "agents-2") == set(SEATS)
    assert not mine(a, "agents-1") & mine(a, "agents-2")
    # Both get a share (rendezvous hashing spreads them).
    assert all(n >= 3 for n in Counter(a.values()).values())


def test_a_dead_process_moves_only_its_own_seats() -> None:
    before = assign(SEATS, ["a", "b", "c"], 100)
    after = assign(SEATS, ["a", "c"], 100)
    for seat, owner in before.items():
        if owner != "b":
            assert after[seat] == owner
        else:
            assert after[seat] in ("a", "c")


def test_the_per_process_bound_spills_to_the_runner_up_then_leaves_seats_unowned() -> None:
    owners = assign(SEATS, ["a", "b"], 10)
    assert Counter(owners.values()) == {"a": 10, "b": 10}
    owners = assign(SEATS, ["a"], 15)
    assert Counter(owners.values()) == {"a": 15, None: 5}
    assert assign(SEATS, [], 10) == dict.fromkeys(SEATS)


def test_refusals_name_their_scope_and_limit() -> None:
    room = [Seat("r", c) for c in ("quinn", "max")]
    err = refusal(Seat("r", "sage"), room, per_room=2, capacity=100)
    assert isinstance(err, TooManySeats) and err.extra["scope"] == "room"
    assert err.extra["limit"] == 2 and err.spec.http_status == 409
    err = refusal(Seat("s", "sage"), room, per_room=2, capacity=2)
    assert err is not None and err.extra["scope"] == "cluster"
    # A seat that is there already is never refused (the POST is idempotent).
    assert refusal(Seat("r", "quinn"), room, per_room=2, capacity=2) is None
    assert refusal(Seat("s", "sage"), room, per_room=2, capacity=3) is None
    assert too_many("room", 8, "r").code == "too_many_seats"


@pytest.mark.parametrize("processes,capacity", [(0, 100), (1, 100), (3, 300), (200, 10_000)])
def test_capacity_is_the_per_process_bound_times_the_live_processes(processes: int,
                                                                     capacity: int) -> None:
    assert SeatLimits(per_process=100).capacity(processes) == capacity


def test_a_seat_key_round_trips() -> None:
    seat = Seat("show:1.a-b_c", "quinn")
    assert Seat.from_key(seat.key) == seat
