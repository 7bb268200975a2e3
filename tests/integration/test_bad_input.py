"""Every kind of bad input, over real WebSockets against a real server process.

Each test sends one kind of bad input and checks two things: the documented
answer (an ``error`` frame with its code, or a close code), and that nothing
else suffers: the same connection still works when it is meant to stay open,
other clients in the room still get actions (and never the bad one), and the
server process is alive and answers ``/healthz``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import msgpack
import pytest

from edge.auth import mint_token
from edge.client import ClosedError, LiveroomClient
from tests.support import API_KEY, LiveServer, metric
from wire.codecs import JSON, MSGPACK
from wire.errors import ERROR_SPECS

T = 3.0  # bound on every wait for a frame

Connect = Callable[..., Awaitable[LiveroomClient]]
Open = Callable[..., Awaitable[LiveroomClient]]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


@pytest.fixture
async def open_ws(http: aiohttp.ClientSession) -> AsyncIterator[Open]:
    """``await open_ws(srv, codec=...)`` -> a client with no hello sent yet."""
    clients: list[LiveroomClient] = []

    async def _open(srv: LiveServer, codec: str = MSGPACK) -> LiveroomClient:
        c = await LiveroomClient.open(srv.ws_url, codec=codec, session=http)
        clients.append(c)
        return c

    yield _open
    for c in clients:
        if not c.ws.closed:
            await c.close()


async def assert_no_state(srv: LiveServer, http: aiohttp.ClientSession, room: str) -> None:
    """The room has no state: its head is ``404 not_found`` (issue 12)."""
    async with http.get(f"{srv.url}/v1/rooms/{room}/state") as r:
        body = await r.json()
        assert r.status == 404 and body["code"] == "not_found", body


async def expect_error(c: LiveroomClient, code: str, *, ref: Any = None,
                       timeout: float = T) -> dict[str, Any]:
    """The next error frame; it must carry ``code`` (and ``ref`` when given)."""
    frame = await c.expect("error", timeout=timeout)
    assert frame["code"] == code, frame
    assert frame["advice"] == ERROR_SPECS[code].advice, frame
    assert isinstance(frame.get("message"), str) and frame["message"], frame
    if ref is not None:
        assert frame.get("ref") == ref, frame
    return frame


async def expect_close(c: LiveroomClient, code: int, timeout: float = T) -> list[dict[str, Any]]:
    """Read until the server closes; the close code must be ``code``. Returns
    the frames that came before the close."""
    before: list[dict[str, Any]] = []
    with pytest.raises(ClosedError) as info:
        for _ in range(100):
            before.append(await c.recv(timeout))
    assert info.value.code == code, (info.value, before)
    assert c.ws.close_code == code
    return before


async def assert_usable(c: LiveroomClient) -> None:
    """The connection still answers: a ping gets its pong."""
    t = uid("t")
    await c.send({"type": "ping", "t": t})
    pong = await c.expect("pong", timeout=T, t=t)
    assert isinstance(pong["ts"], float)


async def assert_room_works(sender: LiveroomClient, receiver: LiveroomClient,
                            room: str) -> None:
    """``receiver``'s next action in ``room`` is a fresh comment from
    ``sender``: the room delivers, and nothing bad was delivered before it."""
    text = uid("still-works")
    await sender.action(room, "comment", {"text": text})
    got = await receiver.expect("action", timeout=T, room=room)
    assert got["kind"] == "comment" and got["body"] == {"text": text}, got


async def assert_api_room_works(srv: LiveServer, http: aiohttp.ClientSession,
                                receiver: LiveroomClient, room: str) -> None:
    """As assert_room_works, with the action published by the backend API."""
    text = uid("api")
    async with http.post(f"{srv.url}/v1/rooms/{room}/actions",
                         headers={"Authorization": f"Bearer {API_KEY}"},
                         json={"kind": "comment", "body": {"text": text}}) as r:
        assert r.status == 202, await r.text()
    got = await receiver.expect("action", timeout=T, room=room)
    assert got["kind"] == "comment" and got["body"] == {"text": text}, got


async def assert_alive(srv: LiveServer, http: aiohttp.ClientSession) -> None:
    assert srv.proc is not None and srv.proc.poll() is None, srv.logs()
    async with http.get(f"{srv.url}/healthz", timeout=aiohttp.ClientTimeout(total=T)) as r:
        assert r.status == 200
        assert (await r.json())["status"] == "ok"


async def pair(srv: LiveServer, connect: Connect, room: str, *, role: str = "viewer",
               codec: str = MSGPACK) -> tuple[LiveroomClient, LiveroomClient]:
    """An offender (``role``, ``codec``) and a bystander, both in ``room``."""
    offender = await connect(srv, uid("off"), role, codec)
    bystander = await connect(srv, uid("by"))
    for c in (offender, bystander):
        joined = await c.join(room)
        assert joined["type"] == "joined", joined
    return offender, bystander


async def hello(c: LiveroomClient, token: object, **extra: Any) -> None:
    await c.send({"type": "hello", "token": token, "v": 1, **extra})


# --------------------------------------------------------------------------
# frames that do not decode, or decode to the wrong shape
# --------------------------------------------------------------------------
@pytest.mark.parametrize("data", [
    pytest.param(b"\xc1", id="reserved-byte"),
    pytest.param(b"\x82\xa4type", id="truncated-map"),
    pytest.param(b"\xa5ab", id="truncated-str"),
    pytest.param(b"\x81\xa4type\xa4ping\x01", id="trailing-bytes"),
    pytest.param(b"\x81\x01\xa4ping", id="int-key"),
    pytest.param(b"\xdd\xff\xff\xff\xff", id="huge-array-claim"),
    pytest.param(b"\xa2\xff\xfe", id="bad-utf8"),
    pytest.param(b"", id="empty"),
])
async def test_malformed_msgpack_is_bad_frame(server: LiveServer, connect: Connect,
                                              http: aiohttp.ClientSession, data: bytes) -> None:
    room = uid("r")
    a, b = await pair(server, connect, room)
    await a.send_raw(data)
    err = await expect_error(a, "bad_frame")
    assert "ref" not in err
    await assert_usable(a)
    await assert_room_works(a, b, room)
    await assert_alive(server, http)


@pytest.mark.parametrize("text", [
    pytest.param("{not json", id="garbage"),
    pytest.param('{"type": "ping"', id="truncated"),
    pytest.param('{"type": "ping"} x', id="trailing"),
    pytest.param("", id="empty"),
    pytest.param("{'type': 'ping'}", id="single-quotes"),
])
async def test_malformed_json_is_bad_frame(server: LiveServer, connect: Connect,
                                           http: aiohttp.ClientSession, text: str) -> None:
    room = uid("r")
    a, b = await pair(server, connect, room, codec=JSON)
    await a.send_raw(text)
    err = await expect_error(a, "bad_frame")
    assert "ref" not in err
    await assert_usable(a)
    await assert_room_works(a, b, room)
    await assert_alive(server, http)


@pytest.mark.parametrize("data", [
    pytest.param(pack([1, 2, 3]), id="msgpack-list"),
    pytest.param(pack(42), id="msgpack-int"),
    pytest.param(pack("ping"), id="msgpack-str"),
    pytest.param(pack(None), id="msgpack-nil"),
    pytest.param('[{"type": "ping"}]', id="json-list"),
    pytest.param("42", id="json-number"),
    pytest.param('"ping"', id="json-string"),
    pytest.param("null", id="json-null"),
])
async def test_not_a_map_is_bad_frame(server: LiveServer, connect: Connect,
                                      http: aiohttp.ClientSession, data: bytes | str) -> None:
    room = uid("r")
    a, b = await pair(server, connect, room, codec=MSGPACK if isinstance(data, bytes) else JSON)
    await a.send_raw(data)
    await expect_error(a, "bad_frame")
    await assert_usable(a)
    await assert_room_works(a, b, room)
    await assert_alive(server, http)


@pytest.mark.parametrize("codec", [MSGPACK, JSON])
async def test_map_without_type_is_missing_field(server: LiveServer, connect: Connect,
                                                 http: aiohttp.ClientSession, codec: str) -> None:
    room = uid("r")
    a, b = await pair(server, connect, room, codec=codec)
    await a.send({"room": room, "kind": "comment", "body": {"text": "x"}, "ref": "no-type"})
    await expect_error(a, "missing_field", ref="no-type")
    await assert_usable(a)
    await assert_room_works(a, b, room)
    await assert_alive(server, http)


@pytest.mark.parametrize("ftype", [
    pytest.param("dance", id="unknown-name"),
    pytest.param("welcome", id="server-only-type"),
    pytest.param("PING", id="wrong-case"),
    pytest.param(42, id="number"),
    pytest.param(True, id="bool"),
    pytest.param(["ping"], id="list"),
    pytest.param({"name": "ping"}, id="map"),
])
@pytest.mark.parametrize("codec", [MSGPACK, JSON])
async def test_unknown_type(server: LiveServer, connect: Connect, http: aiohttp.ClientSession,
                            codec: str, ftype: Any) -> None:
    room = uid("r")
    a, b = await pair(server, connect, room, codec=codec)
    await a.send({"type": ftype, "room": room, "ref": "odd-type"})
    await expect_error(a, "unknown_type", ref="odd-type")
    await assert_usable(a)
    await assert_room_works(a, b, room)
    await assert_alive(server, http)


# --------------------------------------------------------------------------
# frames that decode but do not validate
# --------------------------------------------------------------------------
@pytest.mark.parametrize(("frame", "field", "role"), [
    pytest.param({"type": "join"}, "room", "viewer", id="join-without-room"),
    pytest.param({"type": "action", "body": {"text": "x"}}, "kind", "viewer",
                 id="action-without-kind"),
    pytest.param({"type": "peer", "id": "m1", "body": {}}, "to", "viewer", id="peer-without-to"),
    pytest.param({"type": "peer", "to": "someone", "body": {}}, "id", "viewer",
                 id="peer-without-id"),
    pytest.param({"type": "peer", "to": "someone", "id": "m1"}, "body", "viewer",
                 id="peer-without-body"),
    pytest.param({"type": "peer_ack"}, "upto", "viewer", id="peer-ack-without-upto"),
    pytest.param({"type": "state", "section": "meta"}, "value", "host",
                 id="state-without-value"),
    pytest.param({"type": "state", "value": 1}, "section", "host",
                 id="state-without-section"),
    pytest.param({"type": "sync"}, "room", "viewer", id="sync-without-room"),
])
async def test_missing_required_field(server: LiveServer, connect: Connect,
                                      http: aiohttp.ClientSession, frame: dict[str, Any],
                                      field: str, role: str) -> None:
    room = uid("r")
    a, b = await pair(server, connect, room, role=role)
    if frame["type"] in ("action", "state"):
        frame = {**frame, "room": room}
    await a.send({**frame, "ref": 17})
    err = await expect_error(a, "missing_field", ref=17)
    assert err.get("field") == field, err
    await assert_usable(a)
    await assert_room_works(a, b, room)
    await assert_alive(server, http)


_ROOM = "$ROOM"  # replaced by the test's room


@pytest.mark.parametrize(("frame", "field"), [
    pytest.param({"type": "join", "room": "has spaces"}, "room", id="room-with-spaces"),
    pytest.param({"type": "join", "room": "r" * 65}, "room", id="room-too-long"),
    pytest.param({"type": "join", "room": ""}, "room", id="room-empty"),
    pytest.param({"type": "join", "room": 12}, "room", id="room-not-a-string"),
    pytest.param({"type": "join", "room": _ROOM, "known": [1, 2]}, "known",
                 id="known-is-a-list"),
    pytest.param({"type": "join", "room": _ROOM, "known": 3}, "known", id="known-is-a-number"),
    pytest.param({"type": "join", "room": _ROOM, "known": {"meta": -1}}, "known",
                 id="known-negative-version"),
    pytest.param({"type": "join", "room": _ROOM, "known": {"meta": "1"}}, "known",
                 id="known-version-not-int"),
    pytest.param({"type": "sync", "room": _ROOM, "known": ["meta"]}, "known",
                 id="sync-known-is-a-list"),
    pytest.param({"type": "action", "room": _ROOM, "kind": "Comment", "body": {"text": "x"}},
                 "kind", id="kind-uppercase"),
    pytest.param({"type": "action", "room": _ROOM, "kind": "k" * 33}, "kind",
                 id="kind-too-long"),
    pytest.param({"type": "action", "room": _ROOM, "kind": "comment", "body": {"text": ""}},
                 "body", id="comment-empty"),
    pytest.param({"type": "action", "room": _ROOM, "kind": "comment",
                  "body": {"text": "   "}}, "body", id="comment-blank"),
    pytest.param({"type": "action", "room": _ROOM, "kind": "comment",
                  "body": {"text": "x" * 501}}, "body", id="comment-501-chars"),
    pytest.param({"type": "action", "room": _ROOM, "kind": "comment", "body": "hi"}, "body",
                 id="comment-body-not-a-map"),
    pytest.param({"type": "action", "room": _ROOM, "kind": "gift",
                  "body": {"gift": "rose", "count": 0}}, "body", id="gift-count-0"),
    pytest.param({"type": "action", "room": _ROOM, "kind": "gift",
                  "body": {"gift": "rose", "count": 10000}}, "body", id="gift-count-10000"),
    pytest.param({"type": "action", "room": _ROOM, "kind": "gift", "body": {"count": 1}},
                 "body", id="gift-without-name"),
    pytest.param({"type": "action", "room": _ROOM, "kind": "like", "body": {"count": 101}},
                 "body", id="like-count-101"),
    pytest.param({"type": "peer", "to": "not a user", "id": "m1", "body": {}}, "to",
                 id="peer-to-invalid"),
    pytest.param({"type": "state", "room": _ROOM, "section": "Bad Section", "value": 1},
                 "section", id="section-invalid"),
    pytest.param({"type": "state", "room": _ROOM, "section": "meta", "value": 1,
                  "expect": -1}, "expect", id="expect-negative"),
])
async def test_invalid_field(server: LiveServer, connect: Connect, http: aiohttp.ClientSession,
                             frame: dict[str, Any], field: str) -> None:
    room = uid("r")
    a, b = await pair(server, connect, room, role="host")
    frame = {k: (room if v == _ROOM else v) for k, v in frame.items()}
    await a.send({**frame, "ref": "bad-value"})
    err = await expect_error(a, "invalid_field", ref="bad-value")
    assert err.get("field") == field, err
    await assert_usable(a)
    await assert_room_works(a, b, room)
    await assert_alive(server, http)


async def test_comment_of_exactly_500_chars_is_accepted(server: LiveServer, connect: Connect,
                                                        http: aiohttp.ClientSession) -> None:
    """The boundary of the comment limit: 500 passes, 501 is invalid_field."""
    room = uid("r")
    a, b = await pair(server, connect, room)
    await a.action(room, "comment", {"text": "y" * 501})
    await expect_error(a, "invalid_field")
    await a.action(room, "comment", {"text": "y" * 500})
    got = await b.expect("action", timeout=T, room=room)
    assert got["body"] == {"text": "y" * 500}
    await assert_alive(server, http)


@pytest.mark.parametrize("big", [2**64, -(2**63) - 1])
async def test_json_action_integer_out_of_range_is_invalid_field(
        server: LiveServer, connect: Connect, http: aiohttp.ClientSession, big: int) -> None:
    """JSON has no integer limit; msgpack (the bus and the other clients'
    wire format) stops at 64 bits. An action body that cannot be carried is an
    invalid value of the client's (invalid_field), not a server failure."""
    room = uid("r")
    a, b = await pair(server, connect, room, codec=JSON)
    await a.send({"type": "action", "room": room, "kind": "blob", "body": {"n": big},
                  "ref": "big"})
    await expect_error(a, "invalid_field", ref="big")
    await assert_usable(a)
    await assert_room_works(a, b, room)
    await assert_alive(server, http)


async def test_json_state_integer_out_of_range_is_invalid_field(
        server: LiveServer, connect: Connect, http: aiohttp.ClientSession) -> None:
    """A state value that cannot be carried to the room is refused before it is
    applied: otherwise the store moves on while no member ever hears of it."""
    room = uid("r")
    host, b = await pair(server, connect, room, role="host", codec=JSON)
    await host.send({"type": "state", "room": room, "section": "score",
                     "value": {"n": 2**64}, "ref": "big"})
    await expect_error(host, "invalid_field", ref="big")
    await assert_no_state(server, http, room)
    await host.set_state(room, "score", {"n": 1})
    got = await b.expect("state", timeout=T, section="score")
    assert got["partial"] == 1 and got["total"] == 1 and got["value"] == {"n": 1}, got
    await assert_usable(host)
    await assert_room_works(host, b, room)
    await assert_alive(server, http)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_json_non_standard_constant_is_bad_frame(
        server: LiveServer, connect: Connect, http: aiohttp.ClientSession,
        constant: str) -> None:
    """``NaN`` and ``Infinity`` are not JSON (RFC 8259). Accepted, they would
    be echoed to every JSON member of the room, whose JSON.parse then fails."""
    room = uid("r")
    a, b = await pair(server, connect, room, codec=JSON)
    frame = {"type": "action", "room": room, "kind": "blob", "body": {"x": "$"}}
    await a.send_raw(json.dumps(frame).replace('"$"', constant))
    await expect_error(a, "bad_frame")
    await assert_usable(a)
    await assert_room_works(a, b, room)  # the frame with the constant never arrived
    await assert_alive(server, http)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
async def test_msgpack_float_json_cannot_carry_is_invalid_field(
        server: LiveServer, connect: Connect, http: aiohttp.ClientSession,
        value: float) -> None:
    """Both wire variants carry the same messages: a msgpack body with a float
    JSON has no notation for would reach JSON members as invalid JSON."""
    room = uid("r")
    a = await connect(server, uid("off"))
    b = await connect(server, uid("by"), codec=JSON)
    for c in (a, b):
        assert (await c.join(room))["type"] == "joined"
    await a.send({"type": "action", "room": room, "kind": "blob", "body": {"x": value},
                  "ref": "float"})
    await expect_error(a, "invalid_field", ref="float")
    await assert_usable(a)
    await assert_room_works(a, b, room)
    await assert_alive(server, http)


# --------------------------------------------------------------------------
# frame size
# --------------------------------------------------------------------------
@pytest.fixture
def small_frames(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server("--max-frame-bytes", "1024")


@pytest.mark.parametrize("codec", [MSGPACK, JSON])
async def test_frame_over_limit_is_frame_too_large(small_frames: LiveServer, connect: Connect,
                                                   http: aiohttp.ClientSession,
                                                   codec: str) -> None:
    srv = small_frames
    room = uid("r")
    a, b = await pair(srv, connect, room, codec=codec)
    assert a.welcome is not None and a.welcome["limits"]["max_frame_bytes"] == 1024
    # Over the limit, under the hard cap (4x): answered, not read as a frame.
    await a.send({"type": "action", "room": room, "kind": "blob", "body": "z" * 3000,
                  "ref": "big"})
    err = await expect_error(a, "frame_too_large")
    assert err.get("limit") == 1024, err
    await assert_usable(a)
    await assert_room_works(a, b, room)  # the big action was not delivered
    # A frame just under the limit still goes through.
    await a.action(room, "blob", "w" * 900)
    got = await b.expect("action", timeout=T, room=room)
    assert got["body"] == "w" * 900
    await assert_alive(srv, http)


async def test_frame_over_hard_cap_closes_1009(small_frames: LiveServer, connect: Connect,
                                               http: aiohttp.ClientSession) -> None:
    srv = small_frames
    room = uid("r")
    a, b = await pair(srv, connect, room)
    other = await connect(srv, uid("other"), "host")
    assert (await other.join(room))["type"] == "joined"
    await a.send_raw(b"\x00" * (4 * 1024 + 100))
    await expect_close(a, 1009)
    # The others carry on.
    await assert_usable(b)
    await assert_usable(other)
    await assert_room_works(other, b, room)
    await assert_alive(srv, http)


# --------------------------------------------------------------------------
# hello
# --------------------------------------------------------------------------
@pytest.mark.parametrize("codec", [MSGPACK, JSON])
async def test_frames_before_hello_are_hello_required(server: LiveServer, open_ws: Open,
                                                      http: aiohttp.ClientSession,
                                                      codec: str) -> None:
    room = uid("r")
    c = await open_ws(server, codec=codec)
    await c.send({"type": "join", "room": room, "ref": "early-join"})
    await expect_error(c, "hello_required", ref="early-join")
    await c.send({"type": "ping", "t": 1, "ref": 5})
    await expect_error(c, "hello_required", ref=5)
    await c.send({"type": "action", "room": room, "kind": "comment", "body": {"text": "x"}})
    await expect_error(c, "hello_required")
    # The connection stays, and a hello afterwards works.
    await hello(c, server.token(uid("late")), ref="hi")
    welcome = await c.expect("welcome", timeout=T)
    assert welcome["ref"] == "hi" and welcome["codec"] == codec
    assert (await c.join(room))["type"] == "joined"
    await assert_usable(c)
    await assert_alive(server, http)


async def test_hello_twice_is_already_authenticated(server: LiveServer, connect: Connect,
                                                    http: aiohttp.ClientSession) -> None:
    room = uid("r")
    a, b = await pair(server, connect, room)
    user = a.welcome["user"]["id"] if a.welcome else ""
    await hello(a, server.token(uid("someone-else"), "host"), ref="again")
    await expect_error(a, "already_authenticated", ref="again")
    await assert_usable(a)
    # The identity did not change: the room still sees the first one.
    text = uid("who")
    await a.action(room, "comment", {"text": text})
    got = await b.expect("action", timeout=T, room=room)
    assert got["from"]["id"] == user and got["from"]["role"] == "viewer", got
    await assert_alive(server, http)


async def test_no_hello_closes_4102(make_server: Callable[..., LiveServer], open_ws: Open,
                                    connect: Connect, http: aiohttp.ClientSession) -> None:
    srv = make_server("--hello-timeout", "0.5")
    room = uid("r")
    a, b = await pair(srv, connect, room)  # said hello in time
    silent = await open_ws(srv)
    await expect_close(silent, 4102)
    assert await metric(http, srv.url, "liveroom_closes_total", code="4102") >= 1
    # The clients that said hello are older than the timeout and still open.
    await assert_usable(a)
    await assert_room_works(a, b, room)
    await assert_alive(srv, http)


async def test_hello_required_frames_do_not_extend_the_hello_timeout(
        make_server: Callable[..., LiveServer], open_ws: Open,
        http: aiohttp.ClientSession) -> None:
    srv = make_server("--hello-timeout", "0.5")
    c = await open_ws(srv)
    await c.send({"type": "ping"})
    await expect_error(c, "hello_required")
    await expect_close(c, 4102)
    await assert_alive(srv, http)


def _forged() -> str:
    return mint_token("another-secret-another-secret-another", uid("forger"), "f", "host",
                      time.time(), 3600)


@pytest.mark.parametrize("token", [
    pytest.param("expired", id="expired"),
    pytest.param("forged", id="forged-signature"),
    pytest.param("garbage", id="garbage-string"),
    pytest.param("empty", id="empty-string"),
    pytest.param("number", id="not-a-string"),
])
async def test_bad_token_is_unauthorized_then_closed(server: LiveServer, open_ws: Open,
                                                   connect: Connect,
                                                   http: aiohttp.ClientSession,
                                                   token: str) -> None:
    room = uid("r")
    a, b = await pair(server, connect, room)
    value: object = {
        "expired": server.token(uid("late"), "host", ttl=-60),
        "forged": _forged(),
        "garbage": "this-is-not-a-jwt",
        "empty": "",
        "number": 12345,
    }[token]
    # An expired token: get a new one and reconnect (4200); any other bad
    # token: do not retry as is (4001).
    code = 4200 if token == "expired" else 4001
    before = await metric(http, server.url, "liveroom_closes_total", code=str(code))
    c = await open_ws(server)
    await hello(c, value, ref="tok")
    frames = await expect_close(c, code)
    errors = [f for f in frames if f.get("type") == "error"]
    assert len(errors) == 1 and errors[0]["code"] == "unauthorized", frames
    assert errors[0].get("ref") == "tok", errors
    assert errors[0]["advice"] == "renew_token"
    if token == "expired":
        assert errors[0].get("expired") is True, errors
    assert not [f for f in frames if f.get("type") == "welcome"], frames
    assert await metric(http, server.url, "liveroom_closes_total", code=str(code)) == before + 1
    await assert_usable(a)
    await assert_room_works(a, b, room)
    await assert_alive(server, http)


@pytest.mark.parametrize("version", [2, 0, "1"])
async def test_wrong_protocol_version_closes_4003(server: LiveServer, open_ws: Open,
                                                  connect: Connect,
                                                  http: aiohttp.ClientSession,
                                                  version: Any) -> None:
    room = uid("r")
    a, b = await pair(server, connect, room)
    c = await open_ws(server)
    await c.send({"type": "hello", "token": server.token(uid("v")), "v": version, "ref": "v"})
    frames = await expect_close(c, 4003)
    errors = [f for f in frames if f.get("type") == "error"]
    assert len(errors) == 1 and errors[0]["code"] == "unsupported_version", frames
    assert errors[0]["ref"] == "v" and errors[0]["supported"] == [1]
    await assert_usable(a)
    await assert_room_works(a, b, room)
    await assert_alive(server, http)


async def test_token_expiring_during_session_closes_4200(server: LiveServer, connect: Connect,
                                                         http: aiohttp.ClientSession) -> None:
    room = uid("r")
    _, b = await pair(server, connect, room)
    c = await LiveroomClient.connect(server.ws_url, server.token(uid("short"), ttl=2),
                                     session=http)
    try:
        assert (await c.join(room))["type"] == "joined"
        await assert_usable(c)  # fine until the token runs out
        await expect_close(c, 4200, timeout=4.0)
    finally:
        await c.close()
    assert await metric(http, server.url, "liveroom_closes_total", code="4200") >= 1
    await assert_api_room_works(server, http, b, room)
    await assert_usable(b)
    await assert_alive(server, http)


# --------------------------------------------------------------------------
# rooms, roles, versions
# --------------------------------------------------------------------------
async def test_too_many_rooms(make_server: Callable[..., LiveServer], connect: Connect,
                              http: aiohttp.ClientSession) -> None:
    srv = make_server("--max-rooms", "3")
    a = await connect(srv, uid("roomy"))
    rooms = [uid("r") for _ in range(4)]
    for room in rooms[:3]:
        assert (await a.join(room))["type"] == "joined"
    err = await a.join(rooms[3])
    assert err["type"] == "error" and err["code"] == "too_many_rooms", err
    assert err["limit"] == 3
    # Joining a room it is already in is not a new room; leaving frees a slot.
    assert (await a.join(rooms[0]))["type"] == "joined"
    left = await a.request({"type": "leave", "room": rooms[2]}, "left")
    assert left["type"] == "left", left
    assert (await a.join(rooms[3]))["type"] == "joined"
    b = await connect(srv, uid("by"))
    assert (await b.join(rooms[3]))["type"] == "joined"
    await assert_room_works(a, b, rooms[3])
    await assert_alive(srv, http)


@pytest.mark.parametrize("frame", [
    pytest.param({"type": "action", "kind": "comment", "body": {"text": "x"}}, id="action"),
    pytest.param({"type": "sync"}, id="sync"),
    pytest.param({"type": "leave"}, id="leave"),
    pytest.param({"type": "state", "section": "meta", "value": 1}, id="state"),
])
async def test_not_joined(server: LiveServer, connect: Connect, http: aiohttp.ClientSession,
                          frame: dict[str, Any]) -> None:
    room, elsewhere = uid("r"), uid("elsewhere")
    a, b = await pair(server, connect, room, role="host")
    listener = await connect(server, uid("listener"))
    assert (await listener.join(elsewhere))["type"] == "joined"
    await a.send({**frame, "room": elsewhere, "ref": "nj"})
    err = await expect_error(a, "not_joined", ref="nj")
    assert err["room"] == elsewhere
    await assert_usable(a)
    await assert_room_works(a, b, room)
    # Nothing reached the room it is not in.
    await assert_api_room_works(server, http, listener, elsewhere)
    await assert_no_state(server, http, elsewhere)
    await assert_alive(server, http)


async def test_viewer_writing_state_is_forbidden(server: LiveServer, connect: Connect,
                                                 http: aiohttp.ClientSession) -> None:
    room = uid("r")
    a, b = await pair(server, connect, room)
    await a.send({"type": "state", "room": room, "section": "meta", "value": {"x": 1},
                  "ref": "st"})
    err = await expect_error(a, "forbidden", ref="st")
    assert err["section"] == "meta"
    await assert_no_state(server, http, room)
    await assert_usable(a)
    await assert_room_works(a, b, room)
    await assert_alive(server, http)


@pytest.mark.parametrize("kind", ["agent.delta", "system.x"])
async def test_viewer_reserved_kind_is_forbidden(server: LiveServer, connect: Connect,
                                                 http: aiohttp.ClientSession, kind: str) -> None:
    room = uid("r")
    a, b = await pair(server, connect, room)
    await a.send({"type": "action", "room": room, "kind": kind, "body": {"text": "x"},
                  "ref": "rk"})
    await expect_error(a, "forbidden", ref="rk")
    await assert_usable(a)
    await assert_room_works(a, b, room)  # the forbidden action never arrived
    await assert_alive(server, http)


async def test_stale_compare_and_set_is_version_conflict(server: LiveServer, connect: Connect,
                                                         http: aiohttp.ClientSession) -> None:
    room = uid("r")
    host, b = await pair(server, connect, room, role="host")
    await host.set_state(room, "score", 1)
    assert (await b.expect("state", timeout=T, section="score"))["partial"] == 1
    await host.set_state(room, "score", 2, expect=1)
    assert (await b.expect("state", timeout=T, section="score"))["partial"] == 2
    await host.send({"type": "state", "room": room, "section": "score", "value": 99,
                     "expect": 1, "ref": "cas"})
    err = await expect_error(host, "version_conflict", ref="cas")
    assert err["current"] == 2 and err["section"] == "score", err
    # The stale write changed nothing; the right expectation applies.
    async with http.get(f"{server.url}/v1/rooms/{room}/state/score") as r:
        assert (await r.json())["value"] == 2
    await host.set_state(room, "score", 3, expect=2)
    got = await b.expect("state", timeout=T, section="score")
    assert got["partial"] == 3 and got["value"] == 3, got
    await assert_usable(host)
    await assert_room_works(host, b, room)
    await assert_alive(server, http)


@pytest.mark.parametrize("ref", [7, "req-7"])
async def test_errors_echo_the_ref(server: LiveServer, connect: Connect,
                                   http: aiohttp.ClientSession, ref: Any) -> None:
    room = uid("r")
    a, b = await pair(server, connect, room)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"room": room}, "missing_field"),
        ({"type": "bogus"}, "unknown_type"),
        ({"type": "hello", "token": "x"}, "already_authenticated"),
        ({"type": "join"}, "missing_field"),
        ({"type": "join", "room": "a b"}, "invalid_field"),
        ({"type": "action", "room": uid("nope"), "kind": "comment"}, "not_joined"),
        ({"type": "action", "room": room, "kind": "gift", "body": {"gift": "g", "count": 0}},
         "invalid_field"),
        ({"type": "state", "room": room, "section": "meta", "value": 1}, "forbidden"),
    ]
    for frame, code in cases:
        await a.send({**frame, "ref": ref})
        await expect_error(a, code, ref=ref)
    # A ref that is neither a string nor an int is not echoed.
    await a.send({"type": "bogus", "ref": [1, 2]})
    assert "ref" not in await expect_error(a, "unknown_type")
    await assert_usable(a)
    await assert_room_works(a, b, room)
    await assert_alive(server, http)


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------
async def _json_error(r: aiohttp.ClientResponse, status: int, code: str) -> dict[str, Any]:
    assert r.status == status, await r.text()
    assert r.content_type == "application/json"
    body: dict[str, Any] = await r.json()
    assert body["code"] == code, body
    assert body["advice"] == ERROR_SPECS[code].advice
    return body


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no-header"),
    pytest.param({"Authorization": "Bearer wrong-key"}, id="wrong-key"),
    pytest.param({"Authorization": "Bearer "}, id="empty-key"),
    pytest.param({"Authorization": API_KEY}, id="no-bearer-prefix"),
    pytest.param({"Authorization": f"Basic {API_KEY}"}, id="basic-scheme"),
])
async def test_backend_api_without_the_key_is_401(server: LiveServer, connect: Connect,
                                                  http: aiohttp.ClientSession,
                                                  headers: dict[str, str]) -> None:
    room = uid("r")
    listener = await connect(server, uid("listener"))
    assert (await listener.join(room))["type"] == "joined"
    async with http.post(f"{server.url}/v1/rooms/{room}/actions", headers=headers,
                         json={"kind": "comment", "body": {"text": "sneaky"}}) as r:
        await _json_error(r, 401, "unauthorized")
    async with http.post(f"{server.url}/v1/rooms/{room}/state/meta", headers=headers,
                         json={"value": {"title": "sneaky"}}) as r:
        await _json_error(r, 401, "unauthorized")
    await assert_no_state(server, http, room)
    # With the key it works, and the rejected action was never delivered.
    await assert_api_room_works(server, http, listener, room)
    await assert_alive(server, http)


@pytest.mark.parametrize("body", [
    pytest.param(b"{not json", id="garbage"),
    pytest.param(b"", id="empty"),
    pytest.param(b'["kind", "comment"]', id="not-an-object"),
])
@pytest.mark.parametrize("path", ["actions", "state/meta"])
async def test_backend_api_invalid_json_is_400(server: LiveServer, http: aiohttp.ClientSession,
                                               body: bytes, path: str) -> None:
    room = uid("r")
    async with http.post(f"{server.url}/v1/rooms/{room}/{path}", data=body,
                         headers={"Authorization": f"Bearer {API_KEY}",
                                  "Content-Type": "application/json"}) as r:
        err = await _json_error(r, 400, "invalid_field")
    assert err["field"] == "body"
    await assert_alive(server, http)


@pytest.mark.parametrize("raw", ["18446744073709551616", "NaN"])
async def test_backend_api_value_no_wire_format_carries_is_400(
        server: LiveServer, connect: Connect, http: aiohttp.ClientSession, raw: str) -> None:
    """The backend API takes JSON too: a value that the room's wire formats
    cannot carry (an integer over 64 bits, NaN) is refused with a JSON
    invalid_field answer, and neither reaches the room nor changes state."""
    room = uid("r")
    listener = await connect(server, uid("listener"), codec=JSON)
    assert (await listener.join(room))["type"] == "joined"
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    await _post_comment(server, http, room, "first")
    for path, template in (("actions", '{"kind": "blob", "body": {"n": $}}'),
                           ("state/score", '{"value": {"n": $}}')):
        async with http.post(f"{server.url}/v1/rooms/{room}/{path}",
                             data=template.replace("$", raw),
                             headers=headers) as r:
            await _json_error(r, 400, "invalid_field")
    await assert_no_state(server, http, room)
    await _post_comment(server, http, room, "second")
    got = await listener.expect("action", timeout=T, room=room)
    assert got["body"] == {"text": "first"}, got
    got = await listener.expect("action", timeout=T, room=room)
    assert got["body"] == {"text": "second"}, got
    await assert_alive(server, http)


async def _post_comment(srv: LiveServer, http: aiohttp.ClientSession, room: str,
                        text: str) -> int:
    async with http.post(f"{srv.url}/v1/rooms/{room}/actions",
                         headers={"Authorization": f"Bearer {API_KEY}"},
                         json={"kind": "comment", "body": {"text": text}}) as r:
        assert r.status == 202, await r.text()
        seq: int = (await r.json())["seq"]
        return seq


async def test_unknown_section_read_is_404(server: LiveServer, http: aiohttp.ClientSession
                                           ) -> None:
    room = uid("r")
    async with http.get(f"{server.url}/v1/rooms/{room}/state/nosuch") as r:
        await _json_error(r, 404, "not_found")
    async with http.get(f"{server.url}/v1/rooms/demo/state/nosuch") as r:
        await _json_error(r, 404, "not_found")
    async with http.get(f"{server.url}/v1/rooms/demo/state/meta") as r:
        assert r.status == 200
    await assert_alive(server, http)


@pytest.mark.parametrize(("body", "field"), [
    pytest.param({"user": "u1", "role": "emperor"}, "role", id="bad-role"),
    pytest.param({"user": "u1", "role": 1}, "role", id="role-not-a-string"),
    pytest.param({"user": "u1", "role": "host"}, "role", id="host-is-granted-per-room"),
    pytest.param({"user": "u1", "rooms": {"a": "emperor"}}, "rooms", id="bad-room-role"),
    pytest.param({"user": "u1", "rooms": {"a b": "host"}}, "rooms", id="bad-room-pattern"),
    pytest.param({"user": "u1", "rooms": ["a"]}, "rooms", id="rooms-not-a-map"),
    pytest.param({"user": "u1", "rooms": {f"r{i}": "host" for i in range(33)}}, "rooms",
                 id="too-many-grants"),
    pytest.param({"user": "not a user"}, "user", id="bad-user"),
    pytest.param({"user": "u1", "ttl": 0}, "ttl", id="ttl-zero"),
])
async def test_dev_token_bad_request_is_400(server: LiveServer, http: aiohttp.ClientSession,
                                            body: dict[str, Any], field: str) -> None:
    async with http.post(f"{server.url}/v1/dev/token", json=body) as r:
        err = await _json_error(r, 400, "invalid_field")
    assert err["field"] == field
    async with http.post(f"{server.url}/v1/dev/token",
                         json={"user": uid("ok"), "rooms": {"mod-room": "moderator"}}) as r:
        assert r.status == 200
        token = (await r.json())["token"]
    c = await LiveroomClient.connect(server.ws_url, token, session=http)
    try:
        assert c.welcome is not None and c.welcome["user"]["role"] == "viewer"
    finally:
        await c.close()
    await assert_alive(server, http)
