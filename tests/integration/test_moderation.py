"""Moderation on a real ``liveroom serve`` (docs/MODERATION.md): the backend
API and the ``moderate`` frame, in both codecs; bans, mutes, kicks,
disconnects, closes, immunity, rooms never beyond one's own, bad input."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from edge.client import LiveroomClient
from tests.support import API_KEY, LiveServer, token
from wire.codecs import JSON, MSGPACK
from wire.incoming import MAX_REASON_CHARS, MAX_SANCTION_SECONDS

T = 3.0
AUTH = {"Authorization": f"Bearer {API_KEY}"}
Connect = Callable[..., Awaitable[LiveroomClient]]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=[MSGPACK, JSON])
def codec(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def conn(server: LiveServer, http: aiohttp.ClientSession,
               codec: str) -> AsyncIterator[Connect]:
    """``await conn(user, rooms=None)`` -> a client after hello, in the
    test's codec; closed at the end."""
    clients: list[LiveroomClient] = []

    async def _connect(user: str, rooms: dict[str, str] | None = None) -> LiveroomClient:
        c = await LiveroomClient.connect(server.ws_url, token(user, rooms=rooms or {}),
                                         codec=codec, session=http)
        clients.append(c)
        return c

    yield _connect
    for c in clients:
        if not c.ws.closed:
            await c.close()


async def api(http: aiohttp.ClientSession, server: LiveServer, method: str, path: str,
              body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    kw: dict[str, Any] = {"headers": AUTH if headers is None else headers}
    if isinstance(body, (bytes, str)):
        kw["data"] = body
    elif body is not None:
        kw["json"] = body
    async with http.request(method, server.url + path, **kw) as r:
        return r.status, await r.json()


async def moderate(c: LiveroomClient, room: str, op: str, user: str,
                   **extra: Any) -> dict[str, Any]:
    return await c.request({"type": "moderate", "room": room, "op": op, "user": user,
                            **extra}, "moderated")


async def joined(c: LiveroomClient, room: str) -> None:
    assert (await c.join(room))["type"] == "joined"


async def first_action(c: LiveroomClient, room: str) -> dict[str, Any]:
    return await c.expect("action", T, room=room)


# --------------------------------------------------------------------------
# bans
# --------------------------------------------------------------------------
async def test_api_ban_removes_the_member_refuses_its_join_until_unbanned(
        server: LiveServer, http: aiohttp.ClientSession, conn: Connect) -> None:
    room, other = uid("room"), uid("other")
    v, w = await conn(uid("v")), await conn(uid("w"))
    for c in (v, w):
        await joined(c, room)
    await joined(v, other)
    before = time.time()
    status, body = await api(http, server, "POST", f"/v1/rooms/{room}/bans",
                             {"user": v_user(v), "seconds": 60, "reason": "spam"})
    assert status == 201, body
    assert body["room"] == room and body["user"] == v_user(v) and body["reason"] == "spam"
    assert before + 59 < body["until"] < time.time() + 61
    left = await v.expect("left", T, room=room)
    assert left["reason"] == "banned" and left["until"] == body["until"]
    assert left["message"] == "spam" and "ref" not in left
    # Out of that room only: its other room and the connection stay.
    err = await v.request({"type": "action", "room": room, "kind": "like", "body": {}},
                          "action")
    assert err["code"] == "not_joined"
    await v.action(other, "like", {"count": 1})
    assert (await first_action(v, other))["kind"] == "like"
    err = await v.join(room)
    assert err["type"] == "error" and err["code"] == "banned"
    assert err["room"] == room and err["until"] == body["until"] and err["reason"] == "spam"
    status, listed = await api(http, server, "GET", f"/v1/rooms/{room}/bans")
    assert status == 200 and [b["user"] for b in listed["bans"]] == [v_user(v)]
    assert listed["bans"][0]["by"] == {"id": "system", "role": "system"}
    assert (await api(http, server, "DELETE", f"/v1/rooms/{room}/bans/{v_user(v)}"))[0] == 200
    await joined(v, room)
    status, body = await api(http, server, "DELETE", f"/v1/rooms/{room}/bans/{v_user(v)}")
    assert status == 404 and body["code"] == "not_found"
    # The other member saw nothing of it but its own room going on.
    await w.action(room, "comment", {"text": "still here"})
    assert (await first_action(w, room))["body"] == {"text": "still here"}


async def close_code(c: LiveroomClient) -> int:
    """The code of the server's close frame (read raw: aiohttp's own
    ``close_code`` turns 1006 when its close reply races the server's end)."""
    for _ in range(100):
        msg = await c.ws.receive(T)
        if msg.type is aiohttp.WSMsgType.CLOSE:
            return int(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            raise AssertionError(f"closed without a close frame: {msg}")
    raise AssertionError("no close frame")


def v_user(c: LiveroomClient) -> str:
    return str(c.welcome["user"]["id"])


async def test_wire_ban_by_a_host_and_a_permanent_ban_has_no_until(
        conn: Connect) -> None:
    room = uid("room")
    h = await conn(uid("h"), {room: "host"})
    v = await conn(uid("v"))
    for c in (h, v):
        await joined(c, room)
    reply = await moderate(h, room, "ban", v_user(v), reason="rude")
    assert reply == {"type": "moderated", "room": room, "op": "ban", "user": v_user(v),
                     "ref": reply["ref"]}
    left = await v.expect("left", T, room=room)
    assert left["reason"] == "banned" and "until" not in left and left["message"] == "rude"
    err = await v.join(room)
    assert err["code"] == "banned" and "until" not in err
    assert (await moderate(h, room, "unban", v_user(v)))["op"] == "unban"
    await joined(v, room)
    err = await h.request({"type": "moderate", "room": room, "op": "unban",
                           "user": v_user(v)}, "moderated")
    assert err["code"] == "not_found"


# --------------------------------------------------------------------------
# mutes
# --------------------------------------------------------------------------
async def test_a_muted_users_actions_reach_no_one_until_unmuted(conn: Connect) -> None:
    room = uid("room")
    m = await conn(uid("m"), {room: "moderator"})
    v, w = await conn(uid("v")), await conn(uid("w"))
    for c in (m, v, w):
        await joined(c, room)
    reply = await moderate(m, room, "mute", v_user(v), seconds=30, reason="calm down")
    assert reply["until"] > time.time() + 25
    err = await v.request({"type": "action", "room": room, "kind": "comment",
                           "body": {"text": "LOUD"}}, "action")
    assert err["code"] == "muted" and err["room"] == room and err["reason"] == "calm down"
    assert 25 < err["retry_after"] <= 30
    await w.action(room, "comment", {"text": "marker"})
    assert (await first_action(w, room))["body"] == {"text": "marker"}  # not LOUD
    assert (await first_action(m, room))["body"] == {"text": "marker"}
    await moderate(m, room, "unmute", v_user(v))
    await v.action(room, "comment", {"text": "sorry"})
    assert (await first_action(w, room))["body"] == {"text": "sorry"}


async def test_api_mutes_are_listed_and_lifted(
        server: LiveServer, http: aiohttp.ClientSession, conn: Connect) -> None:
    room = uid("room")
    v, w = await conn(uid("v")), await conn(uid("w"))
    for c in (v, w):
        await joined(c, room)
    status, body = await api(http, server, "POST", f"/v1/rooms/{room}/mutes",
                             {"user": v_user(v)})
    assert status == 201 and body["until"] is None and body["reason"] == ""
    err = await v.request({"type": "action", "room": room, "kind": "like", "body": {}},
                          "action")
    assert err["code"] == "muted" and "retry_after" not in err
    status, listed = await api(http, server, "GET", f"/v1/rooms/{room}/mutes")
    assert status == 200 and [m["user"] for m in listed["mutes"]] == [v_user(v)]
    assert (await api(http, server, "DELETE", f"/v1/rooms/{room}/mutes/{v_user(v)}"))[0] == 200
    await v.action(room, "comment", {"text": "free"})
    assert (await first_action(w, room))["body"] == {"text": "free"}


# --------------------------------------------------------------------------
# kick, disconnect, close
# --------------------------------------------------------------------------
async def test_kick_leaves_with_a_reason_and_the_user_may_come_back(
        server: LiveServer, http: aiohttp.ClientSession, conn: Connect) -> None:
    room = uid("room")
    h = await conn(uid("h"), {room: "host"})
    v = await conn(uid("v"))
    for c in (h, v):
        await joined(c, room)
    assert (await moderate(h, room, "kick", v_user(v), reason="out"))["op"] == "kick"
    left = await v.expect("left", T, room=room)
    assert left["reason"] == "kicked" and left["message"] == "out"
    await joined(v, room)
    status, body = await api(http, server, "POST", f"/v1/rooms/{room}/kick",
                             {"user": v_user(v)})
    assert status == 202 and body == {"room": room, "user": v_user(v)}
    left = await v.expect("left", T, room=room)
    assert left["reason"] == "kicked" and "message" not in left


async def test_disconnect_closes_every_connection_of_the_user_with_4005(
        server: LiveServer, http: aiohttp.ClientSession, conn: Connect) -> None:
    user, room = uid("v"), uid("room")
    a, b, w = await conn(user), await conn(user), await conn(uid("w"))
    for c in (a, w):
        await joined(c, room)
    status, body = await api(http, server, "POST", f"/v1/users/{user}/disconnect",
                             {"reason": "bye"})
    assert status == 202 and body == {"user": user}
    for c in (a, b):
        assert await close_code(c) == 4005
    await w.action(room, "like", {"count": 1})
    assert (await first_action(w, room))["kind"] == "like"


async def test_close_room_sends_everyone_out_and_drops_its_bans(
        server: LiveServer, http: aiohttp.ClientSession, conn: Connect) -> None:
    room, banned = uid("room"), uid("b")
    h = await conn(uid("h"), {room: "host"})
    v = await conn(uid("v"))
    for c in (h, v):
        await joined(c, room)
    await api(http, server, "POST", f"/v1/rooms/{room}/bans", {"user": banned})
    status, _ = await api(http, server, "DELETE", f"/v1/rooms/{room}", {"reason": "show over"})
    assert status == 202
    for c in (h, v):  # the host too: a close spares no one
        left = await c.expect("left", T, room=room)
        assert left["reason"] == "closed" and left["message"] == "show over"
    status, listed = await api(http, server, "GET", f"/v1/rooms/{room}/bans")
    assert listed["bans"] == []
    b = await conn(banned)
    await joined(b, room)


# --------------------------------------------------------------------------
# who may moderate whom
# --------------------------------------------------------------------------
async def test_a_host_of_room_a_can_never_moderate_room_b(conn: Connect) -> None:
    a, b = uid("a"), uid("b")
    h = await conn(uid("h"), {a: "host"})
    v = await conn(uid("v"))
    err = await h.request({"type": "moderate", "room": b, "op": "ban", "user": v_user(v)},
                          "moderated")
    assert err["code"] == "not_joined"
    for c in (h, v):
        await joined(c, b)
    for op in ("ban", "mute", "kick", "unban"):
        err = await h.request({"type": "moderate", "room": b, "op": op, "user": v_user(v)},
                              "moderated")
        assert err["code"] == "forbidden" and err["room"] == b
    await v.action(b, "like", {"count": 1})
    assert (await first_action(v, b))["kind"] == "like"  # neither banned nor muted


async def test_a_moderator_cannot_touch_a_host_nor_another_moderator(conn: Connect) -> None:
    room = uid("room")
    m = await conn(uid("m"), {room: "moderator"})
    m2 = await conn(uid("m2"), {room: "moderator"})
    h = await conn(uid("h"), {room: "host"})
    for c in (m, m2, h):
        await joined(c, room)
    for target in (h, m2):
        for op in ("ban", "mute", "kick"):
            err = await m.request({"type": "moderate", "room": room, "op": op,
                                   "user": v_user(target)}, "moderated")
            assert err["code"] == "forbidden" and err["reason"] == "immune", err
    await h.action(room, "like", {"count": 1})
    assert (await first_action(m2, room))["from"]["id"] == v_user(h)
    # A host may moderate a moderator.
    await moderate(h, room, "kick", v_user(m2))
    assert (await m2.expect("left", T, room=room))["reason"] == "kicked"


async def test_a_ban_a_moderator_left_for_an_absent_host_does_not_stop_the_host(
        conn: Connect) -> None:
    room, host = uid("room"), uid("h")
    m = await conn(uid("m"), {room: "moderator"})
    await joined(m, room)
    await moderate(m, room, "ban", host)  # not connected here: not known to be immune
    h = await conn(host, {room: "host"})
    await joined(h, room)


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value", "code"), [
    ("op", "smite", "invalid_field"),
    ("op", 3, "invalid_field"),
    ("user", None, "missing_field"),
    ("user", "bad user!", "invalid_field"),
    ("seconds", 0, "invalid_field"),
    ("seconds", MAX_SANCTION_SECONDS + 1, "invalid_field"),
    ("seconds", "60", "invalid_field"),
    ("seconds", True, "invalid_field"),
    ("reason", "x" * (MAX_REASON_CHARS + 1), "invalid_field"),
    ("reason", 5, "invalid_field"),
])
async def test_bad_moderate_frames_get_their_documented_error(
        conn: Connect, field: str, value: Any, code: str) -> None:
    room = uid("room")
    h = await conn(uid("h"), {room: "host"})
    await joined(h, room)
    frame: dict[str, Any] = {"type": "moderate", "room": room, "op": "ban", "user": "x"}
    if value is None:
        del frame[field]
    else:
        frame[field] = value
    err = await h.request(frame, "moderated")
    assert err["code"] == code and err["field"] == field
    await h.action(room, "like", {"count": 1})  # the connection goes on
    assert (await first_action(h, room))["kind"] == "like"


async def test_a_viewer_may_not_moderate(conn: Connect) -> None:
    room = uid("room")
    v, w = await conn(uid("v")), await conn(uid("w"))
    for c in (v, w):
        await joined(c, room)
    err = await v.request({"type": "moderate", "room": room, "op": "kick",
                           "user": v_user(w)}, "moderated")
    assert err["code"] == "forbidden"


@pytest.mark.parametrize(("method", "path", "body", "status", "code", "field"), [
    ("POST", "/v1/rooms/{room}/bans", {}, 400, "missing_field", "user"),
    ("POST", "/v1/rooms/{room}/bans", {"user": "a b"}, 400, "invalid_field", "user"),
    ("POST", "/v1/rooms/{room}/bans", {"user": 7}, 400, "invalid_field", "user"),
    ("POST", "/v1/rooms/{room}/mutes", {"user": "u", "seconds": -1}, 400, "invalid_field",
     "seconds"),
    ("POST", "/v1/rooms/{room}/mutes", {"user": "u", "seconds": 1e12}, 400, "invalid_field",
     "seconds"),
    ("POST", "/v1/rooms/{room}/bans", {"user": "u", "reason": "r" * 201}, 400,
     "invalid_field", "reason"),
    ("POST", "/v1/rooms/bad%20room/bans", {"user": "u"}, 400, "invalid_field", "room"),
    ("DELETE", "/v1/rooms/{room}/bans/bad%20user", None, 400, "invalid_field", "user"),
    ("POST", "/v1/rooms/{room}/kick", {"reason": "x"}, 400, "missing_field", "user"),
    ("POST", "/v1/rooms/{room}/kick", {"user": "u", "reason": ["x"]}, 400, "invalid_field",
     "reason"),
    ("POST", "/v1/users/bad%20user/disconnect", None, 400, "invalid_field", "user"),
    ("DELETE", "/v1/rooms/bad%20room", None, 400, "invalid_field", "room"),
    ("DELETE", "/v1/rooms/{room}", {"reason": 1}, 400, "invalid_field", "reason"),
])
async def test_bad_api_requests_get_their_documented_error(
        server: LiveServer, http: aiohttp.ClientSession, method: str, path: str, body: Any,
        status: int, code: str, field: str) -> None:
    got, answer = await api(http, server, method, path.format(room=uid("room")), body)
    assert (got, answer["code"], answer.get("field")) == (status, code, field), answer


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/rooms/r/bans"), ("GET", "/v1/rooms/r/mutes"),
    ("DELETE", "/v1/rooms/r/bans/u"), ("POST", "/v1/rooms/r/kick"),
    ("POST", "/v1/users/u/disconnect"), ("DELETE", "/v1/rooms/r"),
])
async def test_the_api_needs_the_backend_key(
        server: LiveServer, http: aiohttp.ClientSession, method: str, path: str) -> None:
    status, body = await api(http, server, method, path, {"user": "u"},
                             headers={"Authorization": "Bearer wrong"})
    assert status == 401 and body["code"] == "unauthorized"


async def test_bodies_that_are_not_json_objects_or_too_big_are_refused(
        server: LiveServer, http: aiohttp.ClientSession) -> None:
    path = f"/v1/rooms/{uid('room')}/bans"
    status, body = await api(http, server, "POST", path, b"not json")
    assert status == 400 and body["code"] == "invalid_field"
    status, body = await api(http, server, "POST", path, [1, 2])
    assert status == 400 and body["code"] == "invalid_field"
    status, body = await api(http, server, "POST", path, b"{" + b" " * 70_000 + b"}")
    assert status == 413 and body["code"] == "frame_too_large"
