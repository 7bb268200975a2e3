"""What every HTTP handler module of the edge shares (``edge/web.py`` and
the ``edge/api_*.py`` feature modules): the node behind the app, the backend
key check, the checked ``room`` path part and the JSON body. A module of its
own so that the feature modules need not import ``edge.web``, which
registers them."""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from edge.appkeys import API_KEY_KEY, NODE_KEY
from edge.node import EdgeNode
from wire.decode import decode_json_body
from wire.errors import InvalidField, Unauthorized, Unavailable
from wire.frames import ROOM_RE


def node_of(request: web.Request) -> EdgeNode:
    node: EdgeNode = request.app[NODE_KEY]
    return node


def room_of(request: web.Request) -> str:
    room = request.match_info["room"]
    if not ROOM_RE.match(room):
        raise InvalidField("room ids are 1..64 of [A-Za-z0-9_.:-]", field="room")
    return room


def has_api_key(request: web.Request) -> bool:
    """Whether the request carries the backend key (503 when there is none)."""
    key: str | None = request.app[API_KEY_KEY]
    if not key:
        raise Unavailable("the backend API is disabled: set LIVEROOM_API_KEY")
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    return bool(given) and hmac.compare_digest(given.encode(), key.encode())


def require_api_key(request: web.Request) -> None:
    if not has_api_key(request):
        raise Unauthorized("Authorization: Bearer <LIVEROOM_API_KEY> is required")


async def json_body(request: web.Request) -> dict[str, Any]:
    # read() waits for the whole body; past client_max_size (MAX_API_BODY)
    # aiohttp raises 413, which the middleware answers as frame_too_large.
    raw = await request.read()
    # A JSON object whose fields obey the value rule, as a frame's do.
    return decode_json_body(raw, node_of(request).config.max_value_bytes)
