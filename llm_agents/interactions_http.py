"""The HTTP API of the direct interactions, with its Server-Sent Events.

    POST /v1/rooms/{room}/agents/{name}/interactions   {"text": "..."}
        -> 202 {"id", "status": "running", "events": "/v1/interactions/<id>/events"}
    GET  /v1/interactions/{id}           -> the interaction (status, text, error, usage)
    GET  /v1/interactions/{id}/events    -> Server-Sent Events: "delta" events with
         the text as it streams, then one "done" event; ``Last-Event-ID`` resumes.
    GET  /v1/rooms/{room}/agents         -> the room's characters (backend, breaker)
         and today's token usage of the room and of the caller.

Authentication: ``Authorization: Bearer <user token>`` (the same JWT as the
WebSocket hello); the token's user is charged in the quota, and only that
user reads the interaction (another user gets 404). Over quota the POST is
answered ``429 quota_exceeded`` before anything runs.

The routes are an adapter: what an interaction is, how it runs and where it
is stored are in ``llm_agents.interactions``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web

from edge.auth import Identity
from llm_agents.interactions import Interactions
from wire.decode import DEFAULT_MAX_VALUE_BYTES, decode_json_body
from wire.errors import InvalidField, QuotaExceeded, Unauthorized

MAX_TEXT = 1000
# SSE: a comment line after this many idle seconds keeps proxies from closing
# the stream; an interaction another process runs is polled every POLL_S.
KEEPALIVE_S = 15.0
POLL_S = 0.25


class InteractionRoutes:
    """The routes of ``interactions``, for callers whose token ``verify``
    accepts."""

    def __init__(self, interactions: Interactions,
                 verify: Callable[[object, float], Identity],
                 clock: Callable[[], float] = time.time) -> None:
        self.interactions = interactions
        self._verify = verify
        self._clock = clock

    def _identity(self, request: web.Request) -> Identity:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise Unauthorized("Authorization: Bearer <token> is required")
        return self._verify(header[7:], self._clock())

    async def post(self, request: web.Request) -> web.Response:
        ident = self._identity(request)
        room, name = request.match_info["room"], request.match_info["name"]
        # A JSON object whose fields obey the value rule, as the edge's API.
        body = decode_json_body(await request.read(), DEFAULT_MAX_VALUE_BYTES)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            raise InvalidField(f"text must be a string of 1..{MAX_TEXT} chars", field="text")
        try:
            out = await self.interactions.create(room, name, ident, text)
        except QuotaExceeded as err:
            retry = err.extra.get("retry_after")
            if retry is not None:
                err.http_headers["Retry-After"] = str(retry)
            raise
        return web.json_response(out, status=202)

    async def get(self, request: web.Request) -> web.Response:
        ident = self._identity(request)
        return web.json_response(await self.interactions.owned(request.match_info["id"],
                                                               ident.user))

    async def events(self, request: web.Request) -> web.StreamResponse:
        ident = self._identity(request)
        service = self.interactions
        row = await service.owned(request.match_info["id"], ident.user)
        iid = row["id"]
        try:
            # Any integer a client sends is harmless: clamped to the seqs a
            # stream can have (a 32-bit count of events).
            after = max(0, min(int(request.headers.get("Last-Event-ID", "0")), 2**31 - 1))
        except ValueError:
            after = 0
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        idle = 0.0
        with service.watching(iid) as changed:
            while True:
                # Cleared before reading, so a change between the read and
                # the wait is not missed.
                changed.clear()
                events = await service.store.events_after(iid, after)
                for seq, event, data in events:
                    after = seq
                    await resp.write(f"id: {seq}\nevent: {event}\ndata: {data}\n\n".encode())
                    if event == "done":
                        await resp.write_eof()
                        return resp
                if not events:
                    # Resumed past the end (Last-Event-ID at or after "done"),
                    # or interrupted by a restart: nothing more will come.
                    now = await service.store.get(iid)
                    if now is None or now["status"] != "running":
                        await resp.write_eof()
                        return resp
                else:
                    idle = 0.0
                # Run here: woken when the writer stored an event. Run by
                # another process sharing the store: polled.
                wait = KEEPALIVE_S if service.runs_here(iid) else POLL_S
                try:
                    await asyncio.wait_for(changed.wait(), wait)
                except TimeoutError:
                    idle += wait
                    if idle >= KEEPALIVE_S:
                        idle = 0.0
                        await resp.write(b": keep-alive\n\n")

    async def list_agents(self, request: web.Request) -> web.Response:
        """The room's characters, their breaker, and today's token usage of
        the room and of the caller."""
        ident = self._identity(request)
        return web.json_response(await self.interactions.room_agents(
            request.match_info["room"], ident.user))

    def add_routes(self, app: web.Application, list_agents: bool = True) -> None:
        # Without ``list_agents`` the seats' API (``seats_http``) takes the
        # GET and hands it back here for a user's token.
        if list_agents:
            app.router.add_get("/v1/rooms/{room}/agents", self.list_agents)
        app.router.add_post("/v1/rooms/{room}/agents/{name}/interactions", self.post)
        app.router.add_get("/v1/interactions/{id}", self.get)
        app.router.add_get("/v1/interactions/{id}/events", self.events)
