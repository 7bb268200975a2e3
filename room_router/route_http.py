"""``GET /v1/route?room=<id>[&client=<key>]``: which edge URL(s) serve a room.

Answered by the router role and by every edge in the distributed deployment,
from the cluster view the heartbeat keeps (``room_router.gate.ClusterView``).
``client`` is any key of the client's choosing (its user id, a random
string) that spreads the clients of a big room over the groups; without it
the server draws one per request.
"""

from __future__ import annotations

import secrets

from aiohttp import web

from room_router.gate import ClusterView
from wire.errors import InvalidField, MissingField
from wire.frames import ROOM_RE

VIEW_KEY = web.AppKey("cluster_view", ClusterView)


async def route(request: web.Request) -> web.Response:
    room = request.query.get("room")
    if room is None:
        raise MissingField("query parameter 'room' is required", field="room")
    if not ROOM_RE.match(room):
        raise InvalidField("room ids are 1..64 of [A-Za-z0-9_.:-]", field="room")
    client = request.query.get("client")
    if client is not None and not 0 < len(client) <= 64:
        raise InvalidField("client is a key of 1..64 characters", field="client")
    view = request.app[VIEW_KEY]
    answer = await view.route(room, client or secrets.token_hex(8))
    # Placement changes with the live groups: never cache the answer.
    return web.json_response(answer.to_json(), headers={"Cache-Control": "no-store"})


async def cluster(request: web.Request) -> web.Response:
    """The live edge groups as this process sees them (operations, tests)."""
    placement = request.app[VIEW_KEY].placement
    return web.json_response(
        {"groups": {g: [{"node": n.node_id, "url": n.url} for n in nodes]
                    for g, nodes in placement.groups.items()}},
        headers={"Cache-Control": "no-store"})


def add_route_endpoint(app: web.Application, view: ClusterView) -> None:
    app[VIEW_KEY] = view
    app.router.add_get("/v1/route", route)
    app.router.add_get("/v1/cluster", cluster)
