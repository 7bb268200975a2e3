"""Issue 12, pure parts: which rooms are idle (a fake clock), the sections
cap of a room, and the per-connection frame budget of a session."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.auth import mint_token, verify_token
from edge.config import EdgeConfig
from edge.session import Authenticate, Join, Ping, Session, Sync
from room_router.ratelimit import Rate, RateLimiter
from state_versions.store import IdleRooms
from state_versions.versions import RoomState
from wire.errors import RateLimited, TooManySections

SECRET = "unit-secret-unit-secret-unit-secret!"
NOW = 1_800_000_000.0


# -- idle rooms -----------------------------------------------------------
def test_a_room_is_idle_after_its_time_without_writes_or_members() -> None:
    idle = IdleRooms(idle_for=60.0)
    idle.touch("a", 0.0)
    idle.touch("b", 30.0)
    assert idle.sweep(59.9, busy=set()) == []
    assert idle.sweep(60.0, busy=set()) == ["a"]
    assert idle.sweep(89.9, busy=set()) == []
    idle.touch("b", 89.9)  # a write restarts its clock
    assert idle.sweep(120.0, busy=set()) == []
    assert idle.sweep(149.9, busy=set()) == ["b"]
    assert len(idle) == 0


def test_a_room_with_members_is_never_idle_and_its_clock_starts_when_they_leave() -> None:
    idle = IdleRooms(idle_for=10.0)
    idle.touch("r", 0.0)
    assert idle.sweep(100.0, busy={"r"}) == []
    assert idle.sweep(109.0, busy=set()) == []  # members seen at 100: 10 s from then
    assert idle.sweep(110.0, busy=set()) == ["r"]


def test_forget_and_exempt_rooms() -> None:
    idle = IdleRooms(idle_for=1.0)
    idle.touch("x", 0.0)
    idle.forget("x")
    idle.forget("never")
    assert idle.sweep(5.0, busy=set()) == []
    idle.touch("demo", 0.0)
    assert idle.sweep(5.0, busy={"demo"}) == []


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.floats(0, 100)), max_size=40),
       st.floats(0, 300), st.sets(st.sampled_from("abcdef")))
def test_sweep_returns_exactly_the_idle_rooms(touches, now, busy) -> None:
    idle = IdleRooms(idle_for=50.0)
    last: dict[str, float] = {}
    t = 0.0
    for room, dt in touches:
        t += dt
        idle.touch(room, t)
        last[room] = t
    now = t + now
    dropped = idle.sweep(now, busy=busy)
    assert sorted(dropped) == sorted(r for r, at in last.items()
                                     if r not in busy and now - at >= 50.0)
    assert len(idle) == len(last) - len(dropped)


# -- sections per room ------------------------------------------------------
def test_a_write_that_would_make_one_section_too_many_is_refused() -> None:
    state = RoomState("r")
    for i in range(3):
        state.apply(f"s{i}", i, max_sections=3)
    with pytest.raises(TooManySections) as err:
        state.apply("s3", 3, max_sections=3)
    assert err.value.extra == {"limit": 3}
    assert state.total == 3 and len(state.versions()) == 3
    assert state.apply("s0", "again", max_sections=3).partial == 2


# -- the frame budget of a connection --------------------------------------------
CONFIG = EdgeConfig(frame_rate=Rate(10.0, 20), frame_cost_bytes=4096)


def session() -> Session:
    s = Session(CONFIG, lambda tok, now: verify_token(tok, SECRET, now),
                RateLimiter(CONFIG.action_rate), RateLimiter(CONFIG.peer_rate), set())
    hello = {"type": "hello", "token": mint_token(SECRET, "u", "u", "viewer", NOW)}
    assert isinstance(s.receive(hello, NOW), Authenticate)
    return s


@pytest.mark.parametrize("frame", [
    {"type": "ping", "t": 1},
    {"type": "join", "room": "r"},
    {"type": "leave", "room": "nowhere"},
    {"type": "peer_ack", "upto": 3},
    {"type": "sync", "room": "nowhere"},
    {"type": "hello", "token": "x"},
])
def test_every_frame_kind_costs_from_the_connection_budget(frame) -> None:
    s = session()  # the hello took one of the 20
    taken = 1
    while taken < 20:
        try:
            s.receive({**frame, "ref": taken}, NOW)
        except RateLimited:
            raise AssertionError(f"refused after {taken} frames") from None
        except Exception:
            pass  # not_joined, already_authenticated...: still charged
        taken += 1
    with pytest.raises(RateLimited) as err:
        s.receive({**frame, "ref": "over"}, NOW)
    assert err.value.ref == "over" and 0.09 < err.value.extra["retry_after"] <= 0.1
    assert isinstance(s.receive({"type": "ping", "t": 1}, NOW + 0.11), Ping)


def test_a_big_reply_puts_the_budget_in_debt() -> None:
    s = session()
    s.rooms.add("r")
    assert isinstance(s.receive({"type": "sync", "room": "r"}, NOW), Sync)
    s.charge_reply(40 * 4096, NOW)  # 40 tokens more than the 18 left: 22 owed
    with pytest.raises(RateLimited) as err:
        s.receive({"type": "sync", "room": "r"}, NOW)
    assert err.value.extra["retry_after"] == pytest.approx(2.3, abs=0.01)
    with pytest.raises(RateLimited):
        s.receive({"type": "ping"}, NOW + 2.2)
    assert isinstance(s.receive({"type": "join", "room": "r2"}, NOW + 2.31), Join)


def test_small_replies_cost_nothing_extra() -> None:
    s = session()
    for i in range(19):
        s.receive({"type": "ping", "ref": i}, NOW)
        s.charge_reply(200, NOW)
    with pytest.raises(RateLimited):
        s.receive({"type": "ping"}, NOW)
