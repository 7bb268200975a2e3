"""The backend hooks' pure parts: the answers parsed (a refusal, a bug of the
backend), the client's action id, and the session deferring a private room
to the join proxy. No event loop."""

from __future__ import annotations

from typing import Any

import pytest

from edge.auth import Identity
from edge.config import EdgeConfig
from edge.session import Session
from room_router.hooks import (
    MAX_INFO_BYTES,
    Malformed,
    connect_answer,
    join_answer,
    publish_answer,
)
from room_router.ratelimit import RateLimiter
from room_router.roomconfig import RoomPolicies, RoomsConfig
from wire.errors import Forbidden, InvalidField, Rejected
from wire.incoming import parse_action
from wire.outgoing import action_frame


def publish(answer: Any, kind: str = "gift", sent: Any = None) -> Any:
    return publish_answer(answer, kind, sent or {"gift": "rose", "count": 1}, 500, 65536)


def test_an_allow_without_a_body_fans_out_what_was_sent() -> None:
    assert publish({"allow": True}) == {"gift": "rose", "count": 1}


def test_a_gift_body_keeps_the_backends_extra_fields() -> None:
    body = {"gift": "rose", "count": 2, "price": 1, "total": 2}
    assert publish({"allow": True, "body": body}) == body


def test_a_refusal_is_rejected_with_the_backends_code() -> None:
    with pytest.raises(Rejected) as err:
        publish({"allow": False, "code": "insufficient_funds", "message": "no money"})
    assert err.value.extra["reason"] == "insufficient_funds"
    assert err.value.message == "no money"
    assert err.value.spec.advice == "give_up"


@pytest.mark.parametrize("answer", [
    None, [], {"ok": True}, {"allow": "yes"}, {"allow": 1},
    {"allow": False, "code": ""}, {"allow": False, "code": "x" * 65},
    {"allow": False, "code": "c", "message": "m" * 201},
    {"allow": True, "body": {"gift": "rose", "count": 100_000}},  # the kind's rules
    {"allow": True, "body": {"gift": "", "count": 1}},
    {"allow": True, "body": {"gift": "rose", "count": 1, "blob": "x" * 70_000}},  # value rule
    {"allow": True, "body": {"gift": "rose", "count": 1, **{f"k{i}": i for i in range(17)}}},
])
def test_a_backend_bug_is_malformed(answer: Any) -> None:
    with pytest.raises(Malformed):
        publish(answer)


def test_a_comment_body_from_the_backend_is_held_to_the_comment_rules() -> None:
    assert publish({"allow": True, "body": {"text": "ok"}}, "comment",
                   {"text": "x"}) == {"text": "ok"}
    with pytest.raises(Malformed):
        publish({"allow": True, "body": {"text": "   "}}, "comment", {"text": "x"})


def test_connect_info_is_a_small_map() -> None:
    assert connect_answer({"allow": True}) is None
    assert connect_answer({"allow": True, "info": {"tier": "vip"}}) == {"tier": "vip"}
    for info in ("vip", ["a"], {"bio": "x" * MAX_INFO_BYTES}):
        with pytest.raises(Malformed):
            connect_answer({"allow": True, "info": info})
    with pytest.raises(Rejected):
        connect_answer({"allow": False, "code": "blocked"})


def test_join_roles_are_room_roles() -> None:
    assert join_answer({"allow": True}) is None
    assert join_answer({"allow": True, "role": "moderator"}) == "moderator"
    with pytest.raises(Malformed):
        join_answer({"allow": True, "role": "agent"})


def test_the_action_id_is_optional_and_bounded() -> None:
    frame = {"type": "action", "room": "r", "kind": "like"}
    assert parse_action(frame, "r", 500).id is None
    assert parse_action({**frame, "id": "a-1:b@c"}, "r", 500).id == "a-1:b@c"
    for bad in ("", "x" * 65, "has space", 7):
        with pytest.raises(InvalidField):
            parse_action({**frame, "id": bad}, "r", 500)


def test_client_id_is_in_the_frame_only_when_given() -> None:
    plain = action_frame("r", "like", None, {"id": "u"}, 1, 0.0, "s-1")
    assert "client_id" not in plain
    assert list(plain)[-1] == "id"
    assert action_frame("r", "like", None, {"id": "u"}, 1, 0.0, "s-1", "c-1")["client_id"] == "c-1"


def session_for(config: str) -> Session:
    rooms: set[str] = set()
    ident = Identity("u", "u", "viewer", 1e12)
    s = Session(EdgeConfig(), lambda token, now: ident, RateLimiter(EdgeConfig().action_rate),
                RateLimiter(EdgeConfig().peer_rate), rooms,
                RoomPolicies(RoomsConfig.parse(config)))
    s.receive({"type": "hello", "token": "t"}, 0.0)
    return s


def test_a_private_room_with_a_join_proxy_defers_to_the_backend() -> None:
    s = session_for('[rooms."club-*"]\nprivate = true\njoin_proxy = true\n'
                    '[rooms."vip"]\nprivate = true\n')
    with pytest.raises(Forbidden):
        s.receive({"type": "join", "room": "vip"}, 1.0)
    join = s.receive({"type": "join", "room": "club-a"}, 1.0)
    assert join.room == "club-a"  # type: ignore[union-attr]


def test_admit_grants_the_role_and_keeps_grants_bounded() -> None:
    s = session_for("")
    assert s.identity is not None
    s.admit("club-a", "moderator", set())
    assert s.identity.role_in("club-a") == "moderator"
    s.admit("club-b", None, {"club-a"})
    assert s.identity.grant_for("club-b") is not None
    assert s.identity.role_in("club-b") == "viewer"
    # club-a is no longer a room of the connection: its proxy grant goes.
    s.admit("club-c", "host", {"club-b"})
    assert s.identity.grant_for("club-a") is None
    assert [g.pattern for g in s.identity.grants] == ["club-c", "club-b"]
