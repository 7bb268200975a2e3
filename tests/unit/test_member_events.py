"""edge/events.py: room and member events from an edge's hub, pure (no loop)."""

from __future__ import annotations

from typing import Any

from edge.config import EdgeConfig
from edge.events import MemberEvents
from edge.fanout import Conn, Hub
from room_router.events import NO_EVENTS, MemorySink
from room_router.roomconfig import RoomPolicies, RoomPolicy, RoomsConfig


class NullSink:
    def write(self, data: Any) -> None: ...


def _conn(cid: int, user: str) -> Conn:
    conn = Conn(cid, NullSink(), EdgeConfig().budget)  # type: ignore[arg-type]
    conn.user = user
    return conn


def _setup(presence: bool, cap: int = 100) -> tuple[MemberEvents, Hub, MemorySink]:
    policies = RoomPolicies()
    policies.current = RoomsConfig(default=RoomPolicy(presence=presence, presence_cap=cap))
    hub = Hub(0.0, lambda: 0.0)
    sink = MemorySink(clock=lambda: 1.0)
    return MemberEvents("edge-1", sink, policies, hub), hub, sink


def _types(sink: MemorySink) -> list[str]:
    return [e["type"] for e in sink.events]


def test_a_presence_room_reports_net_member_changes_per_tick() -> None:
    events, hub, sink = _setup(presence=True)
    a1, a2, b = _conn(1, "a"), _conn(2, "a"), _conn(3, "b")
    hub.join(a1, "r")
    events.opened("r")
    hub.join(a2, "r")
    hub.join(b, "r")
    events.tick()
    hub.leave(a1, "r")  # a still has a2: not a leave
    events.tick()
    hub.leave(b, "r")
    events.tick()
    hub.leave(a2, "r")
    events.closed("r")
    assert _types(sink) == ["room.opened", "members.changed", "members.changed",
                            "members.changed", "room.closed"]
    datas = [e["data"] for e in sink.events]
    assert datas[1]["joined"] == ["a", "b"] and datas[1]["left"] == []
    assert datas[2] == {"node": "edge-1", "joined": [], "left": ["b"]}
    assert datas[3]["left"] == ["a"]  # the last lists come before room.closed
    assert datas[4] == {"node": "edge-1"}


def test_a_room_without_presence_has_room_events_only() -> None:
    events, hub, sink = _setup(presence=False)
    c = _conn(1, "a")
    hub.join(c, "r")
    events.opened("r")
    events.tick()
    events.closed("r")
    assert _types(sink) == ["room.opened", "room.closed"]


def test_over_the_cap_one_event_then_a_full_list_when_back_under() -> None:
    events, hub, sink = _setup(presence=True, cap=2)
    conns = [_conn(i, f"u{i}") for i in range(3)]
    events.opened("r")
    for c in conns:
        hub.join(c, "r")
    events.tick()
    events.tick()
    hub.leave(conns[2], "r")
    events.tick()
    assert [e["data"].get("over_cap") for e in sink.events[1:]] == [True, None]
    assert sink.events[2]["data"]["joined"] == ["u0", "u1"]


def test_events_off_costs_nothing() -> None:
    policies = RoomPolicies()
    hub = Hub(0.0, lambda: 0.0)
    events = MemberEvents("edge-1", NO_EVENTS, policies, hub)
    events.opened("r")
    events.tick()
    events.closed("r")  # no error, nothing tracked
