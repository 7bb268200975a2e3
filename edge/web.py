"""HTTP routes of the edge: the demo page, health, metrics, dev tokens and the
backend publish API. The state reads for polling clients (``cdn.origin``,
a folder beside this one) are mounted on the same app by the composition
root in ``liveroom/``, so they answer through the same error middleware.

Every error answer is JSON ``{"code", "message", "advice", ...}`` with the
HTTP status of its code (``wire.errors.ERROR_SPECS``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sized
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, generate_latest

from edge import api_messages, api_moderation, api_presence, api_rooms
from edge.appkeys import API_KEY_KEY, JWT_SECRET_KEY, NODE_KEY, QUIC_KEY
from edge.auth import mint_token, parse_grants
from edge.httpapi import json_body as _json_body
from edge.httpapi import node_of as _node
from edge.httpapi import require_api_key as _require_api_key
from edge.httpapi import room_of as _room
from edge.node import SYSTEM_SENDER, EdgeNode
from edge.ws import handle_ws
from plumbing.ratelog import RateLimitedLog
from wire.decode import opt_int
from wire.errors import (
    Forbidden,
    FrameTooLarge,
    InternalError,
    InvalidField,
    LiveroomError,
    MissingField,
    NotFound,
)
from wire.frames import CUSTOM_KIND_RE, GLOBAL_ROLES, SECTION_RE, USER_RE
from wire.incoming import action_body

log = logging.getLogger("liveroom.http")

STATIC_DIR = Path(__file__).parent / "static"
# The JavaScript SDK (clients/js/src, npm package liveroom-client) that the demo
# page imports as ES modules from /sdk/. Beside edge/ in the checkout and, as
# package data of `clients`, in an installed wheel.
SDK_DIR = Path(__file__).resolve().parent.parent / "clients" / "js" / "src"
MAX_API_BODY = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]



def error_response(err: LiveroomError) -> web.Response:
    return web.json_response(err.to_http(), status=err.spec.http_status,
                             headers=err.http_headers or None)


_HTTP_CODES = {404: NotFound, 405: InvalidField, 413: FrameTooLarge}


def errors_middleware(errlog: RateLimitedLog | None = None) -> Middleware:
    """Every error answer is our JSON error body, aiohttp's own included.
    A request that fails unexpectedly is logged through ``errlog`` (one per
    application, rate-limited: any client can send the request again)."""
    errors = errlog or RateLimitedLog(log)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except LiveroomError as err:
            return error_response(err)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            cls = _HTTP_CODES.get(exc.status, InvalidField)
            resp = error_response(cls(exc.reason))
            resp.set_status(exc.status)
            return resp
        except Exception as exc:
            errors.exception(f"http:{type(exc).__name__}", "internal error on %s %s",
                             request.method, request.path[:200])
            return error_response(InternalError())

    return middleware


def _section(request: web.Request) -> str:
    section = request.match_info["section"]
    if len(section) > 97 or not SECTION_RE.match(section):
        raise InvalidField("invalid section name", field="section")
    return section


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def healthz(request: web.Request) -> web.Response:
    node = _node(request)
    body: dict[str, Any] = {"status": "ok", "node": node.node_id, "rooms": len(node.hub.rooms)}
    if isinstance(node.store, Sized):
        # Rooms the in-process state store holds (members or not): what an
        # unknown room's reads must never grow.
        body["state_rooms"] = len(node.store)
    return web.json_response(body)


def metrics_response(registry: CollectorRegistry) -> web.Response:
    """``GET /metrics``: ``registry`` in Prometheus' text format (every role's)."""
    return web.Response(body=generate_latest(registry),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def metrics(request: web.Request) -> web.Response:
    return metrics_response(_node(request).metrics.registry)


async def dev_token(request: web.Request) -> web.Response:
    body = await _json_body(request)
    user = body.get("user")
    if not isinstance(user, str) or not USER_RE.match(user):
        raise InvalidField("user must be 1..64 of [A-Za-z0-9_.:@-]", field="user")
    name = body.get("name", user)
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise InvalidField("name must be a string of 1..64 chars", field="name")
    role = body.get("role", "viewer")
    if role not in GLOBAL_ROLES:
        raise InvalidField(f"role must be one of {', '.join(GLOBAL_ROLES)}; host and "
                           "moderator are granted per room in rooms", field="role")
    rooms = body.get("rooms")
    try:
        parse_grants(rooms)
    except ValueError as exc:
        raise InvalidField(str(exc), field="rooms") from None
    ttl = body.get("ttl", 3600)
    if type(ttl) is not int or not 0 < ttl <= 86400:
        raise InvalidField("ttl must be 1..86400 seconds", field="ttl")
    node = _node(request)
    token = mint_token(request.app[JWT_SECRET_KEY], user, name, role, node.clock(), ttl,
                       rooms=rooms)
    return web.json_response({"token": token})


async def publish_action(request: web.Request) -> web.Response:
    _require_api_key(request)
    room = _room(request)
    body = await _json_body(request)
    kind = body.get("kind")
    if kind is None:
        raise MissingField("field 'kind' is required", field="kind")
    if not isinstance(kind, str) or not CUSTOM_KIND_RE.match(kind):
        raise InvalidField("field 'kind' must match [a-z][a-z0-9_.-]{0,31}", field="kind")
    node = _node(request)
    # The backend may send every kind (system.* and agent.* included): only
    # the body rules of the built-in kinds apply.
    value = action_body(kind, body.get("body"), None, node.config.max_comment_chars)
    sender = dict(SYSTEM_SENDER)
    given = body.get("sender")
    if isinstance(given, str) and USER_RE.match(given):
        sender = {"id": given, "name": given, "role": "system"}
    elif isinstance(given, dict):
        sid, sname = given.get("id"), given.get("name", given.get("id"))
        if not (isinstance(sid, str) and USER_RE.match(sid) and isinstance(sname, str)
                and 0 < len(sname) <= 64):
            raise InvalidField("sender is a user id or {\"id\", \"name\"}", field="sender")
        sender = {"id": sid, "name": sname, "role": "system"}
    elif given is not None:
        raise InvalidField("sender is a user id or {\"id\", \"name\"}", field="sender")
    action_id = node.action_ids.next()  # answered: what a retract names
    seq = node.publish_action(room, kind, value, sender, action_id)
    return web.json_response({"room": room, "seq": seq, "id": action_id}, status=202)


async def write_section(request: web.Request) -> web.Response:
    _require_api_key(request)
    room, section = _room(request), _section(request)
    body = await _json_body(request)
    if "value" not in body:
        raise MissingField("field 'value' is required", field="value")
    expected = opt_int(body, "expect")
    partial, total = await _node(request).write_state(room, section, body["value"], expected)
    return web.json_response({"room": room, "section": section, "partial": partial,
                              "total": total})


async def rooms_config(request: web.Request) -> web.Response:
    """``GET /v1/config/rooms`` (backend key): the rooms config in force,
    every entry with its settings resolved, in matching order."""
    _require_api_key(request)
    return web.json_response(_node(request).policies.public(),
                             headers={"Cache-Control": "no-store"})


async def quic_info(request: web.Request) -> web.Response:
    """Where the QUIC edge listens and the SHA-256 of its certificate (for a
    browser's ``serverCertificateHashes``); 404 ``not_found`` when it is off."""
    info: dict[str, Any] = request.app[QUIC_KEY]
    if not info:
        raise NotFound("QUIC is off on this edge")
    return web.json_response(info, headers={"Cache-Control": "no-store"})


async def not_dev(request: web.Request) -> web.Response:
    raise Forbidden("dev tokens are minted only in --dev mode")


def build_app(node: EdgeNode, *, jwt_secret: str, api_key: str | None,
              dev: bool) -> web.Application:
    app = web.Application(middlewares=[errors_middleware(node.errlog)],
                          client_max_size=MAX_API_BODY)
    app[NODE_KEY] = node
    app[JWT_SECRET_KEY] = jwt_secret
    app[API_KEY_KEY] = api_key
    app[QUIC_KEY] = {}  # filled in when the QUIC edge has started (GET /v1/quic)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC_DIR)
    if SDK_DIR.is_dir():
        app.router.add_static("/sdk/", SDK_DIR)
    else:
        log.warning("the JavaScript SDK is not at %s: the demo page will not work", SDK_DIR)
    app.router.add_get("/ws", handle_ws)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/quic", quic_info)
    app.router.add_get("/v1/config/rooms", rooms_config)
    app.router.add_post("/v1/dev/token", dev_token if dev else not_dev)
    app.router.add_post("/v1/rooms/{room}/actions", publish_action)
    app.router.add_post("/v1/rooms/{room}/state/{section}", write_section)
    api_rooms.add_routes(app)
    api_messages.add_routes(app)
    api_presence.add_routes(app)
    api_moderation.add_routes(app)
    return app
