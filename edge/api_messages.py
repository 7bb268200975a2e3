"""HTTP routes of backend peer messages (docs/PROTOCOL.md, "HTTP
endpoints"): the backend sends a peer message as the user ``system``,
through the same inbox path as a client's ``peer`` frame
(``PeerDelivery.post``): durable first, within each addressee's cap
(``inbox_full`` past it), a retry of an ``id`` stored once (``duplicate``).

- ``POST /v1/users/{user}/messages`` ``{"id", "body"}``: 201 ``{to, id, seq,
  duplicate}``; the addressee's refusal is the answer's error.
- ``POST /v1/messages`` ``{"to": [users], "id", "body"}``: 201 ``{id,
  results}``, one result per distinct addressee in the order given, either
  ``{to, seq, duplicate}`` or ``{to, error: {code, message}}``: one full
  inbox does not stop the others.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edge.httpapi import json_body, node_of, require_api_key
from wire.errors import InvalidField, LiveroomError, MissingField
from wire.frames import USER_RE

# The backend's messages come from this user.
SYSTEM_USER = "system"
# Addressees of one ``POST /v1/messages`` at most.
MAX_RECIPIENTS = 1000
MAX_ID_CHARS = 64


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/users/{user}/messages", message_to_user)
    app.router.add_post("/v1/messages", message_to_users)


def _user(value: Any, field: str) -> str:
    if not isinstance(value, str) or not USER_RE.match(value):
        raise InvalidField(f"{field} must be a user id: 1..64 of [A-Za-z0-9_.:@-]", field=field)
    return value


def _message(body: dict[str, Any]) -> tuple[str, Any]:
    """The ``id`` and ``body`` of a request (the peer frame's rules)."""
    if "id" not in body:
        raise MissingField("field 'id' is required", field="id")
    msg_id = body["id"]
    if not isinstance(msg_id, str) or not 0 < len(msg_id) <= MAX_ID_CHARS:
        raise InvalidField(f"id must be a string of 1..{MAX_ID_CHARS} chars", field="id")
    if "body" not in body:
        raise MissingField("field 'body' is required", field="body")
    return msg_id, body["body"]


async def message_to_user(request: web.Request) -> web.Response:
    require_api_key(request)
    to = _user(request.match_info["user"], "user")
    msg_id, value = _message(await json_body(request))
    msg, new = await node_of(request).peers.post(to, SYSTEM_USER, SYSTEM_USER, msg_id, value)
    return web.json_response({"to": to, "id": msg_id, "seq": msg.seq, "duplicate": not new},
                             status=201)


async def message_to_users(request: web.Request) -> web.Response:
    require_api_key(request)
    body = await json_body(request)
    if "to" not in body:
        raise MissingField("field 'to' is required", field="to")
    to = body["to"]
    if not isinstance(to, list) or not 0 < len(to) <= MAX_RECIPIENTS:
        raise InvalidField(f"to must be a list of 1..{MAX_RECIPIENTS} user ids", field="to")
    users = list(dict.fromkeys(_user(u, "to") for u in to))
    msg_id, value = _message(body)
    peers = node_of(request).peers
    results: list[dict[str, Any]] = []
    for user in users:
        try:
            msg, new = await peers.post(user, SYSTEM_USER, SYSTEM_USER, msg_id, value)
        except LiveroomError as err:
            results.append({"to": user, "error": {"code": err.code, "message": err.message}})
            continue
        results.append({"to": user, "seq": msg.seq, "duplicate": not new})
    return web.json_response({"id": msg_id, "results": results}, status=201)
