"""Composition root of ``liveroom serve``: the embedded deployment, every role
in one process on in-process defaults (``liveroom.services.embedded_services``:
memory bus, memory state and registries, a SQLite inbox under the data
directory). The edge is built as ``liveroom edge`` builds it
(``liveroom.wiring.build_edge``); the characters run in the same process, on
in-process links, and the demo room is seeded."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from edge.metrics import Metrics
from liveroom.demo import ScoreboardKeeper
from liveroom.events_wiring import embedded_events
from liveroom.options import ServeOptions
from liveroom.services import embedded_services
from liveroom.wiring import EdgeSecrets, EdgeTimers, build_edge
from llm_agents.service import AgentsService, in_process_links
from room_router.roomconfig import Entry, RoomPolicy, RoomsConfig

log = logging.getLogger("liveroom")

DEMO_ROOM = "demo"
DEMO_STATE: dict[str, dict[str, Any]] = {
    "meta": {"title": "Welcome to liveroom", "host": "host"},
    "pinned": {"text": "Be kind. Gifts light up the stage."},
    "scoreboard": {"gifts": 0, "likes": 0},
}


def demo_rooms_config() -> RoomsConfig:
    """The rooms config of ``liveroom serve`` without ``--rooms-config``:
    the defaults, except that the demo room keeps presence (its page shows
    who is here)."""
    return RoomsConfig(entries=(Entry(DEMO_ROOM, RoomPolicy(presence=True), None),),
                       source="built-in: the demo room keeps presence")


def _dev_secret(path: Path) -> str:
    """A random secret kept in the data directory, so that tokens minted in
    dev mode stay valid across restarts of the process."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(32)
        path.write_text(secret)
        path.chmod(0o600)
        return secret


def make_app(opts: ServeOptions) -> web.Application:
    """The whole embedded service as one aiohttp application."""
    jwt_secret = opts.jwt_secret
    if not jwt_secret:
        if not opts.dev:
            raise SystemExit("LIVEROOM_JWT_SECRET is required (or run with --dev)")
        jwt_secret = _dev_secret(opts.data_dir / "dev-jwt-secret")
        log.warning("dev mode: JWT secret from %s (set LIVEROOM_JWT_SECRET in production)",
                    opts.data_dir / "dev-jwt-secret")
    api_key = opts.api_key
    if not api_key and opts.dev:
        api_key = secrets.token_urlsafe(24)
        log.warning("dev mode: generated backend API key %s", api_key)
    elif not api_key:
        log.warning("LIVEROOM_API_KEY is not set: the backend publish API answers 503")
    metrics = Metrics()
    outbox = embedded_events(opts.events, opts.data_dir / "events.sqlite3", metrics.registry)
    services = embedded_services(opts.config, opts.data_dir / "inbox.sqlite3", outbox)
    node, app = build_edge(services, node_id=opts.node_id, config=opts.config, cdn=opts.cdn,
                           secrets=EdgeSecrets(jwt_secret, api_key, opts.dev),
                           metrics=metrics, rooms_config=opts.rooms_config,
                           hooks=opts.hooks)
    if opts.demo_room and opts.rooms_config is None:
        node.policies.current = demo_rooms_config()
    agents = AgentsService(opts.agents, opts.data_dir, in_process_links(node, jwt_secret),
                           node.verify, node.clock, registry=node.metrics.registry,
                           api_key=api_key) \
        if opts.agents.enabled else None
    if agents is not None:
        agents.add_routes(app)
    timers = EdgeTimers(node, services, keep={DEMO_ROOM} if opts.demo_room else set())

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await services.open()
        node.start()
        keeper: ScoreboardKeeper | None = None
        if opts.demo_room:
            for section, value in DEMO_STATE.items():
                await node.write_state(DEMO_ROOM, section, value, None)
            keeper = ScoreboardKeeper(node, DEMO_ROOM)
            keeper.start(DEMO_STATE["scoreboard"])
        if agents is not None:
            await agents.start()
        timers.start_online()
        timers.start_sweeping()
        yield
        timers.cancel()
        if keeper is not None:
            keeper.stop()
        if agents is not None:
            await agents.stop()
        node.stop()
        await services.close()

    app.cleanup_ctx.append(lifecycle)
    return app
