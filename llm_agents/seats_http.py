"""The seats' HTTP API (the backend key, as the edge's server API):

    POST   /v1/rooms/{room}/agents          {"character": "quinn"}
           -> 201 {"room", "character", "seated": true} (200 if it sat there already)
    DELETE /v1/rooms/{room}/agents/{name}   -> 200 {"room", "character", "removed": true}
    GET    /v1/rooms/{room}/agents          -> the room's seats, each with its owner
           process, and the bounds

A ``GET`` with a user's token (not the backend key) keeps answering what it
answered before seats existed: the characters this process runs in the room
and the caller's token usage (``interactions_http``).

Refusals: ``too_many_seats`` (409) past the room's bound or the processes'
capacity; ``not_found`` (404) for a character no file defines or a seat
that is not there; ``unauthorized`` (401) without the key; ``unavailable``
(503) when no key is configured.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Collection

from aiohttp import web

from llm_agents.seating import Seating
from llm_agents.seats import Seat
from wire.decode import DEFAULT_MAX_VALUE_BYTES, decode_json_body
from wire.errors import InvalidField, NotFound, Unauthorized, Unavailable
from wire.frames import ROOM_RE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SeatRoutes:
    def __init__(self, seating: Seating, characters: Collection[str], api_key: str | None,
                 user_get: Handler) -> None:
        self.seating = seating
        self.characters = characters
        self._key = api_key or ""
        self._user_get = user_get

    def _bearer(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        return header[7:] if header.startswith("Bearer ") else ""

    def _is_backend(self, request: web.Request) -> bool:
        given = self._bearer(request)
        return bool(self._key) and bool(given) and hmac.compare_digest(given.encode(),
                                                                         self._key.encode())

    def _require_key(self, request: web.Request) -> None:
        if not self._key:
            raise Unavailable("the seats API is disabled: set LIVEROOM_API_KEY")
        if not self._is_backend(request):
            raise Unauthorized("Authorization: Bearer <LIVEROOM_API_KEY> is required")

    def _room(self, request: web.Request) -> str:
        room = request.match_info["room"]
        if not ROOM_RE.match(room):
            raise InvalidField("room ids are 1..64 of [A-Za-z0-9_.:-]", field="room")
        return room

    def _character(self, name: object) -> str:
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            raise InvalidField("character must be a name of 1..64 chars", field="character")
        if name not in self.characters:
            raise NotFound(f"no character named {name!r}", field="character")
        return name

    async def post(self, request: web.Request) -> web.Response:
        self._require_key(request)
        room = self._room(request)
        body = decode_json_body(await request.read(), DEFAULT_MAX_VALUE_BYTES)
        seat = Seat(room, self._character(body.get("character")))
        added = await self.seating.add(seat)
        return web.json_response({"room": room, "character": seat.character, "seated": True},
                                 status=201 if added else 200)

    async def delete(self, request: web.Request) -> web.Response:
        self._require_key(request)
        room = self._room(request)
        name = request.match_info["name"]
        if not await self.seating.remove(Seat(room, name)):
            raise NotFound(f"{name!r} has no seat in room {room!r}")
        return web.json_response({"room": room, "character": name, "removed": True})

    async def get(self, request: web.Request) -> web.StreamResponse:
        if not self._is_backend(request):
            return await self._user_get(request)
        room = self._room(request)
        seats = await self.seating.room_seats(room)
        limits = self.seating.limits
        return web.json_response({
            "room": room,
            "seats": [{"character": s.character, "owner": owner} for s, owner in seats],
            "limits": {"per_room": limits.per_room, "per_process": limits.per_process,
                       "capacity": self.seating.capacity()},
            "processes": len(self.seating.processes)})

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/rooms/{room}/agents", self.get)
        app.router.add_post("/v1/rooms/{room}/agents", self.post)
        app.router.add_delete("/v1/rooms/{room}/agents/{name}", self.delete)
