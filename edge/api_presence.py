"""HTTP routes of presence: ``GET /v1/rooms/{room}/presence`` (backend key).

The member list of a room over the whole cluster, as the presence store
holds it (each edge's list, a user once; docs/PROTOCOL.md, "Presence").
It asks for the backend key because the members of a private room are not
public. A room whose config keeps no presence answers 404 ``not_found``;
a room over its cap answers its count only (``"capped": true``).
"""

from __future__ import annotations

from aiohttp import web

from edge.httpapi import node_of, require_api_key, room_of


async def room_presence(request: web.Request) -> web.Response:
    require_api_key(request)
    room = room_of(request)
    body = await node_of(request).presence.snapshot(room)
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/rooms/{room}/presence", room_presence)
