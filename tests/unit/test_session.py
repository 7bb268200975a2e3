"""The session state machine, with no event loop: frames in, commands or errors out."""

from __future__ import annotations

import pytest

from edge.auth import Identity, mint_token, role_everywhere, verify_token
from edge.config import EdgeConfig
from edge.session import (
    AckPeer,
    Authenticate,
    Join,
    Phase,
    SendAction,
    SendPeer,
    Session,
    Sync,
    WriteState,
)
from room_router.ratelimit import Rate, RateLimiter
from wire.errors import (
    AlreadyAuthenticated,
    Forbidden,
    HelloRequired,
    InvalidField,
    LiveroomError,
    MissingField,
    NotJoined,
    RateLimited,
    TooManyRooms,
    Unauthorized,
    UnsupportedVersion,
)

SECRET = "unit-secret-unit-secret-unit-secret!"
NOW = 1_800_000_000.0
CONFIG = EdgeConfig(max_rooms_per_conn=2, action_rate=Rate(5.0, 3), peer_rate=Rate(1.0, 2))


def make(role: str = "viewer", user: str = "u1") -> Session:
    rooms: set[str] = set()
    s = Session(CONFIG, lambda tok, now: verify_token(tok, SECRET, now),
                RateLimiter(CONFIG.action_rate), RateLimiter(CONFIG.peer_rate), rooms)
    role, rooms = role_everywhere(role)
    cmd = s.receive({"type": "hello", "token": mint_token(SECRET, user, user, role, NOW,
                                                          rooms=rooms), "v": 1}, NOW)
    assert isinstance(cmd, Authenticate) and s.phase is Phase.READY
    return s


def joined(role: str = "viewer", *rooms: str) -> Session:
    s = make(role)
    for r in rooms or ("r",):
        assert isinstance(s.receive({"type": "join", "room": r}, NOW), Join)
        s.rooms.add(r)  # the hub does this when the node carries out the join
    return s


def fresh() -> Session:
    return Session(CONFIG, lambda tok, now: verify_token(tok, SECRET, now),
                   RateLimiter(CONFIG.action_rate), RateLimiter(CONFIG.peer_rate), set())


def test_everything_before_hello_is_refused() -> None:
    s = fresh()
    with pytest.raises(HelloRequired):
        s.receive({"type": "join", "room": "r", "ref": 7}, NOW)
    assert s.phase is Phase.AWAITING_HELLO


@pytest.mark.parametrize("token, why", [
    (None, "missing"),
    ("not-a-jwt", "garbage"),
    (mint_token("another-secret-another-secret-xx", "u", "u", "viewer", NOW), "forged"),
    (mint_token(SECRET, "u", "u", "viewer", NOW - 7200), "expired"),
    (mint_token(SECRET, "u", "u", "admin", NOW), "bad role"),
])
def test_bad_tokens_are_unauthorized(token, why) -> None:
    frame = {"type": "hello"} if token is None else {"type": "hello", "token": token}
    with pytest.raises((Unauthorized, MissingField)):
        fresh().receive(frame, NOW)


def test_unsupported_version_and_double_hello() -> None:
    with pytest.raises(UnsupportedVersion):
        fresh().receive({"type": "hello", "token": "x", "v": 99}, NOW)
    with pytest.raises(AlreadyAuthenticated):
        make().receive({"type": "hello", "token": "x"}, NOW)


def test_room_limit_per_connection() -> None:
    s = joined("viewer", "a", "b")
    with pytest.raises(TooManyRooms):
        s.receive({"type": "join", "room": "c"}, NOW)
    # Re-joining a room it is in does not count against the limit.
    assert isinstance(s.receive({"type": "join", "room": "a"}, NOW), Join)


def test_frames_for_rooms_not_joined() -> None:
    s = joined("viewer", "a")
    for frame in ({"type": "action", "room": "b", "kind": "like"},
                  {"type": "sync", "room": "b"}, {"type": "leave", "room": "b"}):
        with pytest.raises(NotJoined):
            s.receive(frame, NOW)


@pytest.mark.parametrize("body, ok", [
    ({"text": "hello"}, True), ({"text": ""}, False), ({"text": "x" * 501}, False),
    ("hello", False), (None, False), ({"text": 5}, False),
])
def test_comment_bodies(body, ok) -> None:
    s = joined()
    frame = {"type": "action", "room": "r", "kind": "comment", "body": body}
    if ok:
        assert isinstance(s.receive(frame, NOW), SendAction)
    else:
        with pytest.raises(InvalidField):
            s.receive(frame, NOW)


def test_gift_like_and_custom_bodies() -> None:
    s = joined()
    cmd = s.receive({"type": "action", "room": "r", "kind": "gift",
                     "body": {"gift": "rose", "count": 3, "junk": 1}}, NOW)
    assert isinstance(cmd, SendAction) and cmd.body == {"gift": "rose", "count": 3}
    with pytest.raises(InvalidField):
        s.receive({"type": "action", "room": "r", "kind": "gift", "body": {"gift": "r",
                   "count": 0}}, NOW)
    cmd = s.receive({"type": "action", "room": "r", "kind": "like"}, NOW)
    assert isinstance(cmd, SendAction) and cmd.body == {"count": 1}
    with pytest.raises(InvalidField):
        s.receive({"type": "action", "room": "r", "kind": "Bad Kind"}, NOW)


def test_reserved_kinds() -> None:
    s = joined()
    for kind in ("agent.say", "system.notice"):
        with pytest.raises(Forbidden):
            s.receive({"type": "action", "room": "r", "kind": kind, "body": {}}, NOW)
    agent = joined("agent")
    assert isinstance(agent.receive({"type": "action", "room": "r", "kind": "agent.say",
                                     "body": {}}, NOW), SendAction)


def test_action_rate_limit_carries_retry_after() -> None:
    s = joined()
    for _ in range(3):
        s.receive({"type": "action", "room": "r", "kind": "like"}, NOW)
    with pytest.raises(RateLimited) as info:
        s.receive({"type": "action", "room": "r", "kind": "like", "ref": "x"}, NOW)
    assert info.value.extra["retry_after"] > 0 and info.value.ref == "x"
    assert isinstance(s.receive({"type": "action", "room": "r", "kind": "like"}, NOW + 1),
                      SendAction)


@pytest.mark.parametrize("role, section, ok", [
    ("viewer", "meta", False), ("host", "meta", True), ("moderator", "pinned", True),
    ("agent", "stage.u1", True), ("agent", "stage.other", False), ("agent", "meta", False),
])
def test_who_may_write_which_section(role, section, ok) -> None:
    s = joined(role)
    frame = {"type": "state", "room": "r", "section": section, "value": 1, "expect": 0}
    if ok:
        cmd = s.receive(frame, NOW)
        assert isinstance(cmd, WriteState) and cmd.expected == 0
    else:
        with pytest.raises(Forbidden):
            s.receive(frame, NOW)


def test_sync_peer_and_ack_validation() -> None:
    s = joined()
    cmd = s.receive({"type": "sync", "room": "r", "known": {"meta": 2}}, NOW)
    assert isinstance(cmd, Sync) and cmd.known == {"meta": 2}
    with pytest.raises(InvalidField):
        s.receive({"type": "sync", "room": "r", "known": {"meta": -1}}, NOW)
    cmd = s.receive({"type": "peer", "to": "u2", "id": "m1", "body": "hi"}, NOW)
    assert isinstance(cmd, SendPeer) and cmd.to == "u2"
    with pytest.raises(MissingField):
        s.receive({"type": "peer", "to": "u2", "id": "m2"}, NOW)
    assert s.receive({"type": "peer_ack", "upto": 4}, NOW) == AckPeer(4)
    with pytest.raises(InvalidField):
        s.receive({"type": "peer_ack", "upto": "4"}, NOW)


def test_errors_carry_the_offending_ref_and_a_documented_code() -> None:
    s = joined()
    with pytest.raises(LiveroomError) as info:
        s.receive({"type": "action", "room": "r", "ref": 42}, NOW)
    frame = info.value.to_frame()
    assert frame["type"] == "error" and frame["code"] == "missing_field"
    assert frame["ref"] == 42 and frame["advice"] == "fix"


def test_identity_from_token() -> None:
    ident = verify_token(mint_token(SECRET, "u9", "Nine", "agent", NOW), SECRET, NOW)
    assert ident == Identity("u9", "Nine", "agent", ident.exp) and ident.exp > NOW


def test_hello_inbox_cursor_is_carried_or_refused() -> None:
    tok = mint_token(SECRET, "u1", "u1", "viewer", NOW)
    cmd = fresh().receive({"type": "hello", "token": tok, "inbox_cursor": 17}, NOW)
    assert isinstance(cmd, Authenticate) and cmd.inbox_cursor == 17
    cmd = fresh().receive({"type": "hello", "token": tok}, NOW)
    assert isinstance(cmd, Authenticate) and cmd.inbox_cursor is None
    for bad in (-1, "17", 1.5, True, [1]):
        s = fresh()
        with pytest.raises(InvalidField) as exc:
            s.receive({"type": "hello", "token": tok, "inbox_cursor": bad, "ref": 9}, NOW)
        assert exc.value.extra["field"] == "inbox_cursor" and exc.value.ref == 9
        assert s.phase is Phase.AWAITING_HELLO
