"""Composition root of ``liveroom serve``: the embedded deployment, every role
in one process on in-process defaults (memory bus, memory state and
registries, a SQLite inbox under the data directory)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from cdn.origin import CdnOrigin
from edge.appkeys import NODE_KEY, QUIC_KEY
from edge.certs import cert_info, dev_cert
from edge.config import EdgeConfig
from edge.metrics import Metrics
from edge.node import EdgeNode
from edge.quic import QuicEdge, QuicOptions, start_quic
from edge.web import build_app
from liveroom.demo import ScoreboardKeeper
from liveroom.options import ServeOptions
from llm_agents.service import AgentsService, in_process_links
from room_router.bus import MemoryBus
from room_router.inbox import SqliteInbox
from room_router.registry import MemoryConnectionRegistry
from state_versions.store import MemoryStateStore

log = logging.getLogger("liveroom")

DEMO_ROOM = "demo"
DEMO_STATE: dict[str, dict[str, Any]] = {
    "meta": {"title": "Welcome to liveroom", "host": "host"},
    "pinned": {"text": "Be kind. Gifts light up the stage."},
    "scoreboard": {"gifts": 0, "likes": 0},
}


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
    store = MemoryStateStore(max_sections=opts.config.max_sections,
                             idle_for=opts.config.room_idle_seconds)
    inbox = SqliteInbox(opts.data_dir / "inbox.sqlite3")
    node = EdgeNode(node_id=opts.node_id, config=opts.config, jwt_secret=jwt_secret,
                    store=store, bus=MemoryBus(), registry=MemoryConnectionRegistry(),
                    inbox=inbox, metrics=Metrics())
    cdn = CdnOrigin(store, opts.cdn, node.metrics.registry)
    app = build_app(node, jwt_secret=jwt_secret, api_key=api_key, dev=opts.dev)
    cdn.add_routes(app)  # the polling origin answers on the edge's app
    agents = AgentsService(opts.agents, opts.data_dir, in_process_links(node, jwt_secret),
                           node.verify, node.clock, registry=node.metrics.registry) \
        if opts.agents.enabled else None
    if agents is not None:
        agents.add_routes(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await inbox.open()
        node.start()
        keeper: ScoreboardKeeper | None = None
        if opts.demo_room:
            for section, value in DEMO_STATE.items():
                await node.write_state(DEMO_ROOM, section, value, None)
            keeper = ScoreboardKeeper(node, DEMO_ROOM)
            keeper.start(DEMO_STATE["scoreboard"])
        if agents is not None:
            await agents.start()
        loop = asyncio.get_running_loop()
        interval = opts.config.online_interval

        handle: asyncio.TimerHandle | None = None

        # The online count is one timer for the whole node, not a task per room.
        def tick() -> None:
            nonlocal handle
            try:
                node.tick_online()
            finally:
                handle = loop.call_later(interval, tick)

        handle = loop.call_later(interval, tick)
        sweeper = sweep_idle_rooms(store, node, {DEMO_ROOM} if opts.demo_room else set(),
                                   opts.config.room_idle_seconds)
        yield
        if handle is not None:
            handle.cancel()
        sweeper.cancel()
        if keeper is not None:
            keeper.stop()
        if agents is not None:
            await agents.stop()
        node.stop()
        await inbox.close()

    async def close_connections(app: web.Application) -> None:
        # on_shutdown runs before aiohttp waits for the open handlers, so the
        # clients hear 4101 (reconnect) instead of a dropped socket.
        node.stop()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_connections)
    return app


class Sweeper:
    """The one timer of a process that drops idle rooms from its in-memory
    state store (``MemoryStateStore.drop_idle``), whatever their number: no
    task or timer per room. It runs every tenth of the idle time (at most a
    minute), so a room is dropped between 0.9 and 1.1 times
    ``room_idle_seconds`` after its last write or its last member (members
    are seen by the sweeps)."""

    __slots__ = ("_handle", "_keep", "_node", "_period", "_store", "dropped")

    def __init__(self, store: MemoryStateStore, node: EdgeNode, keep: set[str],
                 idle_for: float) -> None:
        self._store = store
        self._node = node
        self._keep = keep
        self._period = min(60.0, idle_for / 10)
        self._handle: asyncio.TimerHandle | None = None
        self.dropped = 0

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(self._period, self._sweep)

    def _sweep(self) -> None:
        try:
            busy = self._node.hub.rooms.keys() | self._keep
            dropped = self._store.drop_idle(busy)
            if dropped:
                self.dropped += len(dropped)
                log.info("dropped %d idle rooms from memory", len(dropped))
        finally:
            self.start()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def sweep_idle_rooms(store: MemoryStateStore, node: EdgeNode, keep: set[str],
                     idle_for: float) -> Sweeper:
    """Start dropping ``store``'s idle rooms (not those with members on
    ``node``, nor ``keep``); ``cancel()`` the answer to stop."""
    sweeper = Sweeper(store, node, keep, idle_for)
    sweeper.start()
    return sweeper


class QuicConfigured(Protocol):
    """What ``start_quic_edge`` reads: ``ServeOptions`` and the distributed
    roles' ``RoleOptions`` both have it."""

    host: str
    port: int
    dev: bool
    data_dir: Path
    quic_port: str
    quic_cert: Path | None
    quic_key: Path | None
    quic_idle_timeout: float
    config: EdgeConfig


async def start_quic_edge(app: web.Application, opts: QuicConfigured,
                          tcp_port: int) -> QuicEdge | None:
    """Start the QUIC edge next to the HTTP one (see ServeOptions.quic_port),
    and publish its address and certificate hash at ``GET /v1/quic``."""
    if opts.quic_port == "off":
        log.info("quic off (--quic-port off)")
        return None
    if opts.quic_cert is not None and opts.quic_key is not None:
        cert = cert_info(opts.quic_cert, opts.quic_key)
    elif opts.dev:
        cert = dev_cert(opts.data_dir / "quic", sorted({"localhost", "127.0.0.1", opts.host}),
                        dt.datetime.now(dt.UTC))
    else:
        if opts.quic_port != "auto":
            raise SystemExit("--quic-port needs --quic-cert and --quic-key (or --dev)")
        log.info("quic off (no --quic-cert/--quic-key)")
        return None
    if opts.quic_port == "auto":
        # Next to the TCP port; with --port 0 (a free port) a free one too.
        port = tcp_port + 1 if opts.port else 0
    else:
        port = int(opts.quic_port)
    # aioquic logs every connection at INFO: too much for an edge.
    logging.getLogger("quic").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
    # Test hook only: drop this share of outgoing datagrams (lossy sections).
    loss = float(os.environ.get("LIVEROOM_TEST_DATAGRAM_LOSS", "0") or 0)
    edge = await start_quic(app[NODE_KEY], QuicOptions(
        host=opts.host, port=port, cert=str(cert.cert), key=str(cert.key),
        cert_sha256=cert.sha256, datagram_loss=loss, idle_timeout=opts.quic_idle_timeout))
    app[QUIC_KEY].update({
        "port": edge.port, "path": "/wt", "cert_sha256": cert.sha256,
        "cert_not_after": cert.not_after.timestamp(),
        "datagrams": {"lossy_sections": sorted(opts.config.lossy_sections)},
    })
    log.info("quic listening on udp://%s:%d/wt (certificate sha256 %s, valid until %s)",
             opts.host, edge.port, cert.sha256, cert.not_after.isoformat())
    if loss:
        log.warning("test hook: dropping %.0f%% of outgoing datagrams", loss * 100)
    return edge
