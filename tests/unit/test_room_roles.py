"""Per-room roles (the token's ``rooms`` claim) and what the session lets
each role do in each room: a host of one room is a viewer everywhere else,
a global host token is refused, private rooms admit only granted users, and
a room's policy (kinds, rate, slow mode) applies to its actions."""

from __future__ import annotations

import pytest

from edge.auth import Identity, mint_token, parse_grants, verify_token
from edge.config import EdgeConfig
from edge.session import Authenticate, Session
from room_router.ratelimit import Rate, RateLimiter
from room_router.roomconfig import RoomPolicies, RoomsConfig
from wire.errors import Forbidden, RateLimited, Unauthorized
from wire.incoming import Join, Moderate, SendAction, WriteState

SECRET = "unit-secret-unit-secret-unit-secret!"
NOW = 1_800_000_000.0
CONFIG = EdgeConfig(action_rate=Rate(100.0, 100))

ROOMS = RoomsConfig.parse("""
[rooms."vip-*"]
private = true
[rooms."slow"]
slow_mode = 10
[rooms."gifts-only"]
kinds = ["gift"]
[rooms."tight"]
action_rate = 1
action_burst = 2
""")


def session(role: str = "viewer", rooms: dict[str, str] | None = None,
            user: str = "u1") -> Session:
    s = Session(CONFIG, lambda tok, now: verify_token(tok, SECRET, now),
                RateLimiter(CONFIG.action_rate), RateLimiter(CONFIG.peer_rate), set(),
                RoomPolicies(ROOMS), RateLimiter(CONFIG.action_rate))
    cmd = s.receive({"type": "hello", "token": mint_token(SECRET, user, user, role, NOW,
                                                          rooms=rooms)}, NOW)
    assert isinstance(cmd, Authenticate)
    return s


def join(s: Session, room: str) -> None:
    assert isinstance(s.receive({"type": "join", "room": room}, NOW), Join)
    s.rooms.add(room)


def write(s: Session, room: str) -> object:
    return s.receive({"type": "state", "room": room, "section": "meta", "value": 1}, NOW)


@pytest.mark.parametrize("role", ["host", "moderator"])
def test_a_global_elevated_role_is_refused_at_hello(role: str) -> None:
    s = Session(CONFIG, lambda tok, now: verify_token(tok, SECRET, now),
                RateLimiter(CONFIG.action_rate), RateLimiter(CONFIG.peer_rate), set())
    with pytest.raises(Unauthorized, match="rooms claim"):
        s.receive({"type": "hello", "token": mint_token(SECRET, "u", "u", role, NOW)}, NOW)


def test_a_host_of_one_room_is_a_viewer_in_every_other() -> None:
    s = session(rooms={"a": "host"})
    join(s, "a")
    join(s, "b")
    assert isinstance(write(s, "a"), WriteState)
    with pytest.raises(Forbidden):
        write(s, "b")
    with pytest.raises(Forbidden):
        s.receive({"type": "moderate", "room": "b", "op": "kick", "user": "x"}, NOW)
    cmd = s.receive({"type": "moderate", "room": "a", "op": "kick", "user": "x"}, NOW)
    assert isinstance(cmd, Moderate) and cmd.room == "a"


def test_patterns_grant_a_family_of_rooms() -> None:
    s = session(rooms={"quiz-*": "moderator"})
    for room in ("quiz-1", "quiz-", "quizz"):
        join(s, room)
    assert isinstance(write(s, "quiz-1"), WriteState)
    assert isinstance(write(s, "quiz-"), WriteState)
    with pytest.raises(Forbidden):
        write(s, "quizz")


def test_the_most_specific_grant_wins() -> None:
    ident = Identity("u", "u", "viewer", NOW + 60,
                     parse_grants({"*": "moderator", "quiz-*": "viewer", "quiz-7": "host"}))
    assert ident.role_in("quiz-7") == "host"
    assert ident.role_in("quiz-8") == "viewer"  # quiz-* is longer than *
    assert ident.role_in("other") == "moderator"


def test_the_action_sender_shows_the_role_in_that_room() -> None:
    ident = Identity("u", "U", "viewer", NOW + 60, parse_grants({"a": "host"}))
    assert ident.public_in(ident.role_in("a"))["role"] == "host"
    assert ident.public_in(ident.role_in("b"))["role"] == "viewer"


@pytest.mark.parametrize("claim", [
    ["a"], {"a": "emperor"}, {"a b": "host"}, {"": "host"}, {"a": "agent"},
    {f"r{i}": "host" for i in range(33)},
])
def test_a_bad_rooms_claim_is_unauthorized(claim: object) -> None:
    import jwt
    tok = jwt.encode({"sub": "u", "exp": NOW + 60, "rooms": claim}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized):
        verify_token(tok, SECRET, NOW)


def test_a_private_room_needs_a_grant() -> None:
    with pytest.raises(Forbidden) as info:
        session().receive({"type": "join", "room": "vip-1", "ref": 3}, NOW)
    assert info.value.extra["reason"] == "private" and info.value.ref == 3
    join(session(rooms={"vip-1": "viewer"}), "vip-1")
    join(session(rooms={"vip-*": "viewer"}), "vip-2")
    with pytest.raises(Forbidden):
        session(rooms={"vip-1": "viewer"}).receive({"type": "join", "room": "vip-2"}, NOW)


def test_a_viewer_grant_does_not_lower_an_agent() -> None:
    s = session("agent", rooms={"*": "viewer"}, user="bot")
    join(s, "vip-9")
    cmd = s.receive({"type": "state", "room": "vip-9", "section": "stage.bot", "value": 1}, NOW)
    assert isinstance(cmd, WriteState)


def test_allowed_kinds() -> None:
    s = session()
    join(s, "gifts-only")
    with pytest.raises(Forbidden) as info:
        s.receive({"type": "action", "room": "gifts-only", "kind": "comment",
                   "body": {"text": "hi"}}, NOW)
    assert info.value.extra["kind"] == "comment"
    assert isinstance(s.receive({"type": "action", "room": "gifts-only", "kind": "gift",
                                 "body": {"gift": "rose"}}, NOW), SendAction)


def test_slow_mode_slows_viewers_only() -> None:
    viewer, host = session(), session(rooms={"slow": "host"}, user="h")
    for s in (viewer, host):
        join(s, "slow")
    like = {"type": "action", "room": "slow", "kind": "like"}
    assert isinstance(viewer.receive(like, NOW), SendAction)
    with pytest.raises(RateLimited) as info:
        viewer.receive(like, NOW + 1)
    assert info.value.extra["reason"] == "slow_mode"
    assert 8.9 < info.value.extra["retry_after"] <= 9.0
    assert isinstance(viewer.receive(like, NOW + 10), SendAction)
    for i in range(5):
        assert isinstance(host.receive(like, NOW + i * 0.01), SendAction)


def test_a_room_action_rate() -> None:
    s = session()
    join(s, "tight")
    like = {"type": "action", "room": "tight", "kind": "like"}
    s.receive(like, NOW)
    s.receive(like, NOW)
    with pytest.raises(RateLimited):
        s.receive(like, NOW)
    join(s, "other")  # the edge's own rate elsewhere (burst 100)
    for _ in range(50):
        s.receive({"type": "action", "room": "other", "kind": "like"}, NOW)
