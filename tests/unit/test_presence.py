"""The presence core (room_router/presence.py): pure, no event loop."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from room_router.presence import MemoryPresenceStore, RoomPresence, merge
from wire.outgoing import PRESENCE_CAPPED, RoomVersions, joined_frame, presence_frame


def done(coro: Coroutine[Any, Any, Any]) -> Any:
    """The result of a coroutine that never suspends (the memory store's)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("suspended")


def m(user: str, role: str = "viewer") -> dict[str, str]:
    return {"id": user, "name": user.title(), "role": role}


def test_a_user_with_several_connections_counts_once_and_leaves_with_the_last() -> None:
    room = RoomPresence("r")
    room.add(m("ana"))
    room.add(m("ana"))
    assert room.update(100) == ([m("ana")], [], False, 1)
    room.remove("ana")
    assert room.local_delta() == ([m("ana")], [])
    assert room.update(100) is None  # one connection left: no leave
    room.remove("ana")
    assert room.update(100) == ([], ["ana"], False, 0)
    assert room.empty


def test_a_join_and_a_leave_within_one_tick_show_nothing() -> None:
    room = RoomPresence("r")
    room.add(m("ana"))
    assert room.local_delta() is not None and room.update(100) is not None
    room.add(m("bob"))
    room.remove("bob")
    assert room.local_delta() is None
    assert room.update(100) is None


def test_a_user_on_two_edges_counts_once_and_leaving_one_is_no_leave() -> None:
    room = RoomPresence("r")
    room.add(m("ana"))
    room.apply_delta("edge-b", [m("ana"), m("bob")], [])
    first = room.update(100)
    assert first is not None and first.total == 2 and not first.leaves
    room.remove("ana")  # ana leaves this edge, still on edge-b
    assert room.update(100) is None
    room.apply_delta("edge-b", [], ["ana"])
    assert room.update(100) == ([], ["ana"], False, 1)


def test_the_store_replaces_other_edges_lists_but_not_this_ones() -> None:
    room = RoomPresence("r")
    room.add(m("ana"))
    room.apply_delta("edge-dead", [m("zed")], [])
    room.replace_others({"me": [m("ghost")], "edge-b": [m("bob")]}, own_node="me")
    assert set(room.merged()) == {"ana", "bob"}


def test_over_the_cap_members_are_told_once_then_the_whole_list_again_below() -> None:
    room = RoomPresence("r")
    for user in ("a", "b"):
        room.add(m(user))
    assert room.update(2) is not None
    room.add(m("c"))
    assert room.update(2) == ([], [], True, 3)
    assert room.listing(2) is None
    room.add(m("d"))
    assert room.update(2) is None  # capped: nothing more
    room.remove("c")
    room.remove("d")
    again = room.update(2)
    assert again is not None and not again.capped and not again.leaves
    assert {j["id"] for j in again.joins} == {"a", "b"}


def test_merge_counts_a_user_once() -> None:
    assert merge([[m("a")], [m("a", "host"), m("b")]]) == {"a": m("a"), "b": m("b")}


def test_the_memory_store_forgets_stale_lists_and_empty_ones() -> None:
    store = MemoryPresenceStore()

    done(store.put("r", "e1", [m("a")], now=100.0, ttl=30.0))
    done(store.put("r", "e2", [m("b")], now=120.0, ttl=30.0))
    assert done(store.lists("r", 125.0, 30.0)) == {"e1": [m("a")], "e2": [m("b")]}
    assert done(store.lists("r", 140.0, 30.0)) == {"e2": [m("b")]}
    done(store.put("r", "e2", [], now=141.0, ttl=30.0))
    assert done(store.lists("r", 141.0, 30.0)) == {}
    assert len(store) == 0


def test_frames() -> None:
    body = RoomVersions("r", "e", 0, {}, [])
    plain = joined_frame(body, None, 1, None)
    assert "presence" not in plain and "presence_capped" not in plain
    assert joined_frame(body, None, 1, None, presence=[m("a")])["presence"] == [m("a")]
    assert joined_frame(body, None, 1, None, presence=PRESENCE_CAPPED)["presence_capped"] is True
    assert list(presence_frame("r", [m("a")], ["b"], False, 1)) == \
        ["type", "room", "joins", "leaves", "count"]
    assert presence_frame("r", [], [], True, 7) == \
        {"type": "presence", "room": "r", "capped": True, "count": 7}
