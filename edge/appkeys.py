"""Typed keys of the aiohttp application (``web.AppKey``): what the HTTP and
WebSocket handlers find on the app, set by ``edge.web.build_app``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edge.node import EdgeNode

NODE_KEY = web.AppKey("node", EdgeNode)
JWT_SECRET_KEY = web.AppKey("jwt_secret", str)
API_KEY_KEY: web.AppKey[str | None] = web.AppKey("api_key")
# Filled in when the QUIC edge has started (GET /v1/quic).
QUIC_KEY: web.AppKey[dict[str, Any]] = web.AppKey("quic")
