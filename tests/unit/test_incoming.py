"""wire/incoming.py: each client frame's parser, its typed frame and its refusals
(the documented code, the ``field`` named and the frame's ``ref`` echoed)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire import incoming
from wire.errors import InvalidField, LiveroomError, MissingField, UnsupportedVersion
from wire.frames import CUSTOM_KIND_RE, PROTOCOL_VERSION, ROOM_RE, SECTION_RE, USER_RE

Parse = Callable[[Mapping[str, Any]], object]


def refused(parse: Parse, frame: dict[str, Any]) -> LiveroomError:
    with pytest.raises(LiveroomError) as info:
        parse({**frame, "ref": 7})
    assert info.value.ref == 7
    return info.value


def assert_refused(parse: Parse, frame: dict[str, Any], code: type[LiveroomError],
                   field: str | None) -> None:
    err = refused(parse, frame)
    assert type(err) is code
    if field is not None:
        assert err.to_frame()["field"] == field


def test_hello() -> None:
    assert incoming.parse_hello({"type": "hello", "token": "t", "ref": 1}) == incoming.Hello("t", 1)
    assert incoming.parse_hello({"token": "t", "v": PROTOCOL_VERSION}).token == "t"
    assert_refused(incoming.parse_hello, {"token": "t", "v": 99}, UnsupportedVersion, None)
    assert_refused(incoming.parse_hello, {"token": "t", "v": True}, UnsupportedVersion, None)
    assert_refused(incoming.parse_hello, {}, MissingField, "token")
    # The version is checked before the token.
    assert_refused(incoming.parse_hello, {"v": 99}, UnsupportedVersion, None)
    assert incoming.parse_inbox_cursor({}) is None
    assert incoming.parse_inbox_cursor({"inbox_cursor": 5}) == 5
    for bad in (-1, "5", 1.5, True):
        assert_refused(incoming.parse_inbox_cursor, {"inbox_cursor": bad},
                       InvalidField, "inbox_cursor")


def test_ping_and_peer_ack() -> None:
    assert incoming.parse_ping({"t": 3.5, "ref": "r"}) == incoming.Ping(3.5, "r")
    assert incoming.parse_ping({}) == incoming.Ping(None, None)
    assert incoming.parse_peer_ack({"upto": 4}) == incoming.AckPeer(4)
    assert_refused(incoming.parse_peer_ack, {}, MissingField, "upto")
    for bad in (0, -1, "4", 2.0):
        assert_refused(incoming.parse_peer_ack, {"upto": bad}, InvalidField, "upto")


def test_peer() -> None:
    frame = {"to": "bob", "id": "m1", "body": {"x": 1}, "ref": 2}
    assert incoming.parse_peer(frame) == incoming.SendPeer("bob", {"x": 1}, "m1", 2)
    assert incoming.parse_peer({**frame, "body": None}).body is None  # present, null
    ok = {"to": "bob", "id": "m1", "body": 1}
    assert_refused(incoming.parse_peer, {**ok, "to": None}, MissingField, "to")
    assert_refused(incoming.parse_peer, {**ok, "to": "a b"}, InvalidField, "to")
    assert_refused(incoming.parse_peer, {**ok, "to": "x" * 65}, InvalidField, "to")
    assert_refused(incoming.parse_peer, {"to": "bob", "body": 1}, MissingField, "id")
    assert_refused(incoming.parse_peer, {**ok, "id": ""}, InvalidField, "id")
    assert_refused(incoming.parse_peer, {"to": "bob", "id": "m1"}, MissingField, "body")
    # In order: to, id, body.
    assert_refused(incoming.parse_peer, {"to": 1}, InvalidField, "to")
    assert_refused(incoming.parse_peer, {"to": "bob", "id": 1}, InvalidField, "id")


def test_room_known_epoch() -> None:
    assert incoming.parse_room({"room": "r-1.a:b"}) == "r-1.a:b"
    assert_refused(incoming.parse_room, {}, MissingField, "room")
    for bad in ("", "a/b", "r" * 65, 3):
        assert_refused(incoming.parse_room, {"room": bad}, InvalidField, "room")
    assert incoming.parse_known({}) == {}
    assert incoming.parse_known({"known": {"poll": 3}}) == {"poll": 3}
    known: Any
    for known in ([], {"poll": -1}, {"poll": "3"}, {f"s{i}": 1 for i in range(257)}):
        assert_refused(incoming.parse_known, {"known": known}, InvalidField, "known")
    assert incoming.parse_epoch({"epoch": "e1"}) == "e1"
    assert incoming.parse_epoch({}) is None
    for epoch in (1, "e" * 65):
        assert_refused(incoming.parse_epoch, {"epoch": epoch}, InvalidField, "epoch")


def test_join_leave_sync() -> None:
    assert (incoming.parse_join({"epoch": "e", "ref": 1}, "r", {"a": 1})
            == incoming.Join("r", {"a": 1}, "e", 1))
    assert_refused(lambda f: incoming.parse_join(f, "r", {}), {"epoch": 5},
                   InvalidField, "epoch")
    assert incoming.parse_leave({"ref": 3}, "r") == incoming.Leave("r", 3)
    assert (incoming.parse_sync({"known": {"a": 2}, "epoch": "e"}, "r")
            == incoming.Sync("r", {"a": 2}, "e", None))
    # known before epoch.
    assert_refused(lambda f: incoming.parse_sync(f, "r"), {"known": 1, "epoch": 5},
                   InvalidField, "known")


def action(frame: Mapping[str, Any]) -> incoming.SendAction:
    return incoming.parse_action(frame, "r", 20)


def test_action_kinds_and_bodies() -> None:
    assert action({"kind": "comment", "body": {"text": "hi", "x": 1}, "ref": 4}) == \
        incoming.SendAction("r", "comment", {"text": "hi"}, 4)
    assert action({"kind": "gift", "body": {"gift": "rose"}}).body == {"gift": "rose", "count": 1}
    assert action({"kind": "like"}).body == {"count": 1}
    assert action({"kind": "like", "body": {"count": 100}}).body == {"count": 100}
    # Custom kinds (agent.*, system.* included: roles are the session's) pass as is.
    for kind in ("my.kind", "agent.say", "system.x"):
        assert action({"kind": kind, "body": [1]}).body == [1]
    assert_refused(action, {}, MissingField, "kind")
    for bad in ("", "K", "1a", "a b", "a" * 33, 5):
        assert_refused(action, {"kind": bad}, InvalidField, "kind")
    bad_bodies: dict[str, list[Any]] = {
        "comment": [None, {}, {"text": " "}, {"text": "x" * 21}, {"text": 1}],
        "gift": [None, {"gift": ""}, {"gift": "g" * 33}, {"gift": "g", "count": 0},
                 {"gift": "g", "count": 10000}, {"gift": "g", "count": True}],
        "like": [{"count": 0}, {"count": 101}, {"count": "1"}, 5, []],
    }
    for kind, bodies in bad_bodies.items():
        for body in bodies:
            assert_refused(action, {"kind": kind, "body": body}, InvalidField, "body")


def test_state_target_then_value() -> None:
    assert incoming.parse_state_target({"section": "stage.bob"}) == "stage.bob"
    assert_refused(incoming.parse_state_target, {}, MissingField, "section")
    for bad in ("Stage", "stage.", "a" * 98, 1):
        assert_refused(incoming.parse_state_target, {"section": bad}, InvalidField, "section")
    value = incoming.parse_state_value({"value": None, "expect": 3, "ref": 9}, "r", "poll")
    assert value == incoming.WriteState("r", "poll", None, 3, 9)
    assert incoming.parse_state_value({"value": 1}, "r", "poll").expected is None

    def parse(f: Mapping[str, Any]) -> object:
        return incoming.parse_state_value(f, "r", "poll")
    assert_refused(parse, {}, MissingField, "value")
    assert_refused(parse, {"expect": -1}, MissingField, "value")  # value before expect
    for expect in (-1, "1", 1.0):
        assert_refused(parse, {"value": 1, "expect": expect}, InvalidField, "expect")


@given(st.from_regex(ROOM_RE, fullmatch=True))
def test_any_room_matching_the_pattern_parses(room: str) -> None:
    assert incoming.parse_room({"room": room}) == room


@given(st.from_regex(SECTION_RE, fullmatch=True))
def test_any_section_matching_the_pattern_parses(section: str) -> None:
    assert incoming.parse_state_target({"section": section}) == section


@given(st.from_regex(USER_RE, fullmatch=True), st.text(min_size=1, max_size=64))
def test_any_peer_to_matching_the_pattern_parses(to: str, msg_id: str) -> None:
    assert incoming.parse_peer({"to": to, "id": msg_id, "body": 0}).to == to


@given(st.from_regex(CUSTOM_KIND_RE, fullmatch=True), st.integers())
def test_any_custom_kind_is_delivered_as_is(kind: str, body: int) -> None:
    if kind not in ("comment", "gift", "like"):
        assert action({"kind": kind, "body": body}).body == body


@given(st.text(max_size=80))
def test_a_room_parses_exactly_when_it_matches(room: str) -> None:
    ok = 0 < len(room) <= 64 and ROOM_RE.match(room) is not None
    try:
        incoming.parse_room({"room": room})
    except InvalidField as err:
        assert not ok and err.to_frame()["field"] == "room"
    else:
        assert ok


@given(st.integers(min_value=-3, max_value=10_010))
def test_a_gift_count_parses_exactly_in_range(count: int) -> None:
    try:
        body = action({"kind": "gift", "body": {"gift": "rose", "count": count}}).body
    except InvalidField:
        assert not 0 < count <= 9999
    else:
        assert body == {"gift": "rose", "count": count} and 0 < count <= 9999
