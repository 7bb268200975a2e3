"""HTTP routes of rooms (docs/PROTOCOL.md, "HTTP endpoints"): a room's
history, retracting one of its actions, a room's info and the listing of the
rooms with members.

- ``GET /v1/rooms/{room}/history[?limit=N]``: the room's kept actions,
  oldest first. Public for a room that is not private (cacheable for
  ``HISTORY_MAX_AGE`` seconds, like the state head), the backend key for a
  private one; 404 ``not_found`` for a room whose policy keeps no history.
- ``DELETE /v1/rooms/{room}/actions/{id}`` (backend key): retract, 202.
- ``GET /v1/rooms/{room}`` (backend key): online count, the policy applied,
  the state's epoch and versions; 404 for a room with neither state nor
  members.
- ``GET /v1/rooms?prefix=&limit=&cursor=`` (backend key): rooms with
  members, sorted by id, a page at a time.

Online counts: in a cluster (``ONLINE_KEY`` set by the distributed edge),
from the online counts service the heartbeats fill (as fresh as one
heartbeat period); else this process's own members.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edge.httpapi import has_api_key, node_of, require_api_key, room_of
from room_router.nodes import OnlineCounts, room_page
from wire.errors import InvalidField, NotFound, Unauthorized
from wire.frames import ROOM_RE

# The cluster's online counts service, when there is one (liveroom/distributed.py).
ONLINE_KEY: web.AppKey[OnlineCounts | None] = web.AppKey("online_counts")
# Seconds a public history answer may be cached.
HISTORY_MAX_AGE = 2
# Rooms per page of the listing: default and most.
LIST_DEFAULT = 100
LIST_MAX = 1000
# An action id in a path: what ``moderate`` accepts for ``id``.
MAX_ACTION_ID = 64


def add_routes(app: web.Application) -> None:
    app.setdefault(ONLINE_KEY, None)
    app.router.add_get("/v1/rooms", list_rooms)
    app.router.add_get("/v1/rooms/{room}", room_info)
    app.router.add_get("/v1/rooms/{room}/history", history)
    app.router.add_delete("/v1/rooms/{room}/actions/{id}", retract)


def _int_param(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isdigit() and len(raw) <= 6 and 1 <= int(raw) <= high):
        raise InvalidField(f"{name} must be an integer in 1..{high}", field=name)
    return int(raw)


async def history(request: web.Request) -> web.Response:
    room = room_of(request)
    node = node_of(request)
    policy = node.policies.policy(room)
    if policy.private and not has_api_key(request):
        raise Unauthorized("the room is private: Authorization: Bearer <LIVEROOM_API_KEY>")
    if policy.history <= 0:
        raise NotFound("the room keeps no history (rooms config: history)")
    limit = _int_param(request, "limit", policy.history, policy.history)
    frames = await node.history.frames(room, limit)
    cache = "private, no-store" if policy.private else f"public, max-age={HISTORY_MAX_AGE}"
    return web.json_response({"room": room, "history": frames},
                             headers={"Cache-Control": cache})


async def retract(request: web.Request) -> web.Response:
    require_api_key(request)
    room = room_of(request)
    action_id = request.match_info["id"]
    if not 0 < len(action_id) <= MAX_ACTION_ID:
        raise InvalidField(f"an action id is 1..{MAX_ACTION_ID} characters", field="id")
    held = await node_of(request).history.retract(room, action_id, "system")
    return web.json_response({"room": room, "id": action_id, "in_history": held}, status=202)


async def room_info(request: web.Request) -> web.Response:
    require_api_key(request)
    room = room_of(request)
    node = node_of(request)
    online_counts = request.app[ONLINE_KEY]
    if online_counts is not None:
        online = (await online_counts.totals([room], node.clock())).get(room, 0)
    else:
        online = node.hub.count(room) + node.online_elsewhere.get(room, 0)
    total, versions = await node.store.versions(room)
    if online == 0 and total == 0 and not versions:
        raise NotFound("no such room: no state and no members")
    body: dict[str, Any] = {"room": room, "online": online,
                            "config": node.policies.policy(room).public(),
                            "epoch": node.store.epoch, "total": total, "versions": versions}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def list_rooms(request: web.Request) -> web.Response:
    require_api_key(request)
    prefix = request.query.get("prefix", "")
    if prefix and (len(prefix) > 64 or not ROOM_RE.match(prefix)):
        raise InvalidField("prefix is at most 64 of [A-Za-z0-9_.:-]", field="prefix")
    cursor = request.query.get("cursor", "")
    if cursor and not ROOM_RE.match(cursor):
        raise InvalidField("cursor is the next_cursor of a previous page", field="cursor")
    limit = _int_param(request, "limit", LIST_DEFAULT, LIST_MAX)
    node = node_of(request)
    online_counts = request.app[ONLINE_KEY]
    if online_counts is not None:
        page = await online_counts.rooms(prefix, cursor, limit + 1, node.clock())
    else:
        local = node.local_counts()
        page = room_page(local, prefix, cursor, limit + 1, lambda r: local.get(r, 0))
    more = len(page) > limit
    page = page[:limit]
    return web.json_response(
        {"rooms": [{"room": r, "online": n} for r, n in page],
         "next_cursor": page[-1][0] if more else None},
        headers={"Cache-Control": "no-store"})
