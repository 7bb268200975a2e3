"""The backend's moderation API (docs/MODERATION.md): bans, mutes, kicks,
disconnects and room closes, with the backend key. What it does is
``edge.moderation.Moderation``'s, the same as the ``moderate`` frame's, with
the role ``system``: no one is immune to it.

Every input is checked before anything is done: the path's room
(``ROOM_RE``) and user (``USER_RE``), the body through the value rule
(``edge.httpapi.json_body``, at most ``MAX_API_BODY`` bytes), ``user`` by
``USER_RE``, ``seconds`` and ``reason`` by ``wire.incoming.parse_sanction``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edge.httpapi import json_body as _json_body
from edge.httpapi import node_of as _node
from edge.httpapi import require_api_key as _require_api_key
from edge.httpapi import room_of as _room
from room_router.moderation import BAN, MUTE, SYSTEM_BY
from wire.errors import InvalidField, MissingField, NotFound
from wire.frames import USER_RE
from wire.incoming import parse_sanction

# The collection in the path -> the kind of sanction it holds.
_KINDS = {"bans": BAN, "mutes": MUTE}


def _path_user(request: web.Request) -> str:
    user = request.match_info["user"]
    if not USER_RE.match(user):
        raise InvalidField("user ids are 1..64 of [A-Za-z0-9_.:@-]", field="user")
    return user


def _body_user(body: dict[str, Any]) -> str:
    user = body.get("user")
    if user is None:
        raise MissingField("field 'user' is required", field="user")
    if not isinstance(user, str) or not USER_RE.match(user):
        raise InvalidField("field 'user' must be 1..64 of [A-Za-z0-9_.:@-]", field="user")
    return user


async def _optional_body(request: web.Request) -> dict[str, Any]:
    """The body of a request that may have none (``{}`` then)."""
    return await _json_body(request) if request.body_exists else {}


def _reason(body: dict[str, Any]) -> str:
    return parse_sanction({"reason": body.get("reason", "")}, None)[1]


async def add_sanction(request: web.Request) -> web.Response:
    """``POST /v1/rooms/{room}/bans|mutes`` ``{"user", "seconds"?, "reason"?}``: 201."""
    _require_api_key(request)
    room, kind = _room(request), _KINDS[request.match_info["kinds"]]
    body = await _json_body(request)
    user = _body_user(body)
    seconds, reason = parse_sanction(body, None)
    sanction = await _node(request).moderation.sanction(kind, room, user, seconds, reason,
                                                        SYSTEM_BY)
    return web.json_response({"room": room, "user": user, "until": sanction.until,
                              "reason": reason}, status=201)


async def list_sanctions(request: web.Request) -> web.Response:
    """``GET /v1/rooms/{room}/bans|mutes``: the active ones, oldest first."""
    _require_api_key(request)
    room, kinds = _room(request), request.match_info["kinds"]
    listed = await _node(request).moderation.listed(_KINDS[kinds], room)
    return web.json_response({"room": room, kinds: [s.public() for s in listed]},
                             headers={"Cache-Control": "no-store"})


async def lift_sanction(request: web.Request) -> web.Response:
    """``DELETE /v1/rooms/{room}/bans|mutes/{user}``: 200, or 404 ``not_found``."""
    _require_api_key(request)
    room, user, kind = _room(request), _path_user(request), _KINDS[request.match_info["kinds"]]
    if not await _node(request).moderation.lift(kind, room, user, SYSTEM_BY):
        raise NotFound(f"user {user!r} has no {kind} in room {room!r}", room=room, user=user)
    return web.json_response({"room": room, "user": user})


async def kick(request: web.Request) -> web.Response:
    """``POST /v1/rooms/{room}/kick`` ``{"user", "reason"?}``: 202."""
    _require_api_key(request)
    room = _room(request)
    body = await _json_body(request)
    user = _body_user(body)
    _node(request).moderation.kick(room, user, _reason(body), SYSTEM_BY)
    return web.json_response({"room": room, "user": user}, status=202)


async def disconnect(request: web.Request) -> web.Response:
    """``POST /v1/users/{user}/disconnect`` ``{"reason"?}``: 202; every
    connection of the user is closed 4005."""
    _require_api_key(request)
    user = _path_user(request)
    body = await _optional_body(request)
    _node(request).moderation.disconnect(user, _reason(body), SYSTEM_BY)
    return web.json_response({"user": user}, status=202)


async def close_room(request: web.Request) -> web.Response:
    """``DELETE /v1/rooms/{room}`` ``{"reason"?}``: 202; the members leave
    with ``closed``, the room's bans and mutes are dropped (its state is
    kept and expires as an idle room's does)."""
    _require_api_key(request)
    room = _room(request)
    body = await _optional_body(request)
    await _node(request).moderation.close_room(room, _reason(body), SYSTEM_BY)
    return web.json_response({"room": room}, status=202)


def add_routes(app: web.Application) -> None:
    kinds = "{kinds:bans|mutes}"
    app.router.add_post(f"/v1/rooms/{{room}}/{kinds}", add_sanction)
    app.router.add_get(f"/v1/rooms/{{room}}/{kinds}", list_sanctions)
    app.router.add_delete(f"/v1/rooms/{{room}}/{kinds}/{{user}}", lift_sanction)
    app.router.add_post("/v1/rooms/{room}/kick", kick)
    app.router.add_post("/v1/users/{user}/disconnect", disconnect)
    app.router.add_delete("/v1/rooms/{room}", close_room)
