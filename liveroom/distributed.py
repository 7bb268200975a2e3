"""Composition root of the distributed deployment: the ``edge``, ``router``
and ``cdn`` roles, each a process wired to NATS, Redis and PostgreSQL.

Theory of operation
-------------------
Every role opens the same ``Services`` (``open_services``): the NATS bus, the
state store, the connection registry, the peer inbox, the node registry and
the online counts, each behind its protocol. Left out, a service falls back
to its embedded implementation, which is only right for a single process
(logged as a warning).

An edge node heartbeats every ``heartbeat`` seconds (``Heartbeat``): it
registers itself (id, group, public URL) with a TTL of three periods,
reports its local member counts, re-asserts its connections in the
connection registry, then reads the live nodes back. From them it builds the
placement (``room_router.placement``): joins of rooms another group owns get
a ``redirect`` (``room_router.gate``); when the live groups change, the
members of local rooms that moved away get a ``redirect`` (reason
``moved``) to the new owner and rejoin there with their versions. The online
count each room's members see is the sum over the live edges' reports.
Because every heartbeat re-writes everything, a restarted Redis is whole
again one period later.

The router role keeps the same view (heartbeats as a non-edge node) and
answers ``GET /v1/route``; the cdn role serves the polling origin over the
shared store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from cdn.origin import CdnOrigin
from edge.http_site import TimedSite, counter_of
from edge.metrics import Metrics
from edge.node import EdgeNode
from edge.quic import QuicEdge
from edge.web import build_app, errors_middleware, metrics_response
from edge.ws_conn import EdgeSite
from liveroom.app import Sweeper, start_quic_edge, sweep_idle_rooms
from liveroom.options import RoleOptions
from room_router.bus import Bus, MemoryBus
from room_router.gate import ClusterView, PlacementGate
from room_router.inbox import Inbox, SqliteInbox
from room_router.nodes import (
    MemoryNodeRegistry,
    MemoryOnlineCounts,
    NodeInfo,
    NodeRegistry,
    OnlineCounts,
)
from room_router.placement import Placement, rooms_leaving
from room_router.ratelimit import SharedRateLimiter
from room_router.registry import ConnectionRegistry, MemoryConnectionRegistry
from room_router.route_http import add_route_endpoint
from state_versions.store import MemoryStateStore, StateStore

log = logging.getLogger("liveroom.distributed")

@dataclass
class Services:
    bus: Bus
    store: StateStore
    registry: ConnectionRegistry
    inbox: Inbox
    nodes: NodeRegistry
    online: OnlineCounts
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # The per-user action limit across edges (Redis), when there is one.
    shared_action_limiter: SharedRateLimiter | None = None

    async def close(self) -> None:
        await close_all(self.closers)


async def close_all(closers: list[Callable[[], Awaitable[Any]]]) -> None:
    """Close in the reverse order of opening; one failure stops no other."""
    for close in reversed(closers):
        try:
            await close()
        except Exception:
            log.warning("closing a service failed", exc_info=True)
    closers.clear()


async def open_services(opts: RoleOptions, metrics: Metrics) -> Services:
    """The services named in ``opts``; embedded ones for those left out.
    If one fails to open, those already open are closed again."""
    closers: list[Callable[[], Awaitable[None]]] = []
    try:
        return await _open_services(opts, metrics, closers)
    except BaseException:
        await close_all(closers)
        raise


async def _open_services(opts: RoleOptions, metrics: Metrics,
                         closers: list[Callable[[], Awaitable[None]]]) -> Services:
    bus: Bus
    if opts.nats:
        from room_router.bus_nats import BusFault, BusMetrics, NatsBus

        # Test hook only (room_router/bus_nats.py, "Fault hook").
        fault = BusFault.from_env(os.environ)
        if fault is not None:
            log.warning("TEST HOOK ON: the NATS bus drops %.0f%% and delays %.0f%% (up to "
                        "%.2f s) of the publishes to %s.* (LIVEROOM_TEST_BUS_FAULT)",
                        fault.drop * 100, fault.delay * 100, fault.max_delay, fault.kind)
        nats_bus = await NatsBus.connect(opts.nats, name=opts.node_id,
                                         prefix=opts.subject_prefix,
                                         metrics=BusMetrics(metrics.registry), fault=fault)
        closers.append(nats_bus.close)
        bus = nats_bus
        log.info("bus: NATS %s (prefix %r)", nats_bus.connected_url, opts.subject_prefix)
    else:
        bus = MemoryBus()
        log.warning("no --nats: in-process bus, this node sees only its own rooms")
    store: StateStore
    registry: ConnectionRegistry
    nodes: NodeRegistry
    online: OnlineCounts
    inbox: Inbox
    if opts.redis and opts.postgres:
        # The full deployment: every adapter from scale-data's one call (the
        # two-tier store: Redis hot, PostgreSQL durable; the shared limit).
        from liveroom.services import open_distributed_stores

        stores = await open_distributed_stores(
            opts.redis, opts.postgres, action_rate=opts.config.action_rate,
            registry_ttl=max(10.0, 5 * opts.heartbeat),
            max_sections=opts.config.max_sections, idle_ttl=opts.config.room_idle_seconds)
        closers.append(stores.close)
        log.info("redis %s + postgres: tiered state, inbox, registries, counts, limits",
                 opts.redis)
        return Services(bus, stores.state, stores.registry, stores.inbox, stores.nodes,
                        stores.online, closers, shared_action_limiter=stores.action_limiter)
    pg_store: Any = None
    if opts.postgres:
        from room_router.inbox_postgres import open_postgres_inbox
        from state_versions.store_postgres import open_postgres_store

        pg_inbox = await open_postgres_inbox(opts.postgres)
        closers.append(pg_inbox.close)
        inbox = pg_inbox
        if not opts.redis:
            pg_store = await open_postgres_store(opts.postgres,
                                                 max_sections=opts.config.max_sections)
            closers.append(pg_store.close)
        log.info("postgres: peer inbox%s", "" if opts.redis else " and state store")
    else:
        sqlite = SqliteInbox(opts.data_dir / f"inbox-{opts.node_id}.sqlite3")
        await sqlite.open()
        closers.append(sqlite.close)
        inbox = sqlite
        log.warning("no --postgres: the peer inbox is a local SQLite file")
    if opts.redis:
        from room_router.nodes_redis import RedisNodeRegistry, RedisOnlineCounts
        from room_router.registry_redis import RedisConnectionRegistry
        from state_versions.store_redis import RedisStateStore
        from storage.redis_conn import open_redis

        client = open_redis(opts.redis)
        closers.append(client.aclose)
        # Redis is the only copy here: its rooms never expire.
        store = await RedisStateStore.open(client, max_sections=opts.config.max_sections)
        # Connections are re-asserted by every heartbeat: expire after a few.
        registry = RedisConnectionRegistry(client, ttl=max(10.0, 5 * opts.heartbeat))
        nodes = RedisNodeRegistry(client)
        online = RedisOnlineCounts(client)
        log.info("redis: %s (state, registries, online counts)", opts.redis)
    else:
        store = pg_store if pg_store is not None else MemoryStateStore(
            max_sections=opts.config.max_sections)
        registry = MemoryConnectionRegistry()
        nodes = MemoryNodeRegistry()
        online = MemoryOnlineCounts()
        log.warning("no --redis: registries and counts are in this process only")
    return Services(bus, store, registry, inbox, nodes, online, closers)


class Heartbeat:
    """Register this node, report its counts, read the cluster back; every
    ``period`` seconds on a loop timer (one task at a time, never two)."""

    def __init__(self, *, info: NodeInfo, services: Services, view: ClusterView,
                 node: EdgeNode | None, period: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.info = info
        self.services = services
        self.view = view
        self.node = node
        self.period = period
        self.ttl = 3 * period
        self.clock = clock
        self.beats = 0
        self.failures = 0
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._tick()

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self.beat())
        self._handle = loop.call_later(self.period, self._tick)

    async def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        try:
            await self.services.nodes.remove(self.info.node_id)
        except Exception:
            log.warning("could not deregister %s", self.info.node_id, exc_info=True)

    async def beat(self) -> None:
        # Two tries: after a Redis restart the first command meets a pooled
        # connection the server closed, and fails; that connection is
        # dropped, so a second try at once gets a fresh one. Without it the
        # registries would be rebuilt only one period later.
        for attempt in (1, 2):
            try:
                await self._beat()
                self.beats += 1
                return
            except Exception as exc:
                # Redis or the network is away: keep serving what we have,
                # try again next period (everything is re-written each time).
                self.failures += 1
                if attempt == 2:
                    log.warning("heartbeat failed: %s: %s", type(exc).__name__, exc)

    async def _beat(self) -> None:
        s, node = self.services, self.node
        now = self.clock()
        await s.nodes.heartbeat(self.info, self.ttl, now)
        local: dict[str, int] = {}
        if node is not None:
            local = node.local_counts()
            await s.online.report(self.info.node_id, local, self.ttl, now)
            await s.registry.refresh(self.info.node_id, node.local_connections())
        live = await s.nodes.live(now)
        before, after = self.view.placement, Placement(live, self.view.placement.big_threshold)
        self.view.placement = after
        if node is None:
            return
        for room, route in rooms_leaving(node.hub.rooms, group=self.info.group,
                                         before=before, after=after).items():
            # Big rooms are served by every group: their members stay.
            if await self.view.is_big(room):
                continue
            told = node.redirect_room(room, route.urls)
            log.info("room %s moved to group %s: %d members redirected", room, route.group,
                     told)
        if local:
            totals = await s.online.totals(list(local), now)
            node.online_elsewhere = {r: max(0, totals.get(r, 0) - n) for r, n in local.items()}


def _jwt_secret(opts: RoleOptions) -> str:
    if opts.jwt_secret:
        return opts.jwt_secret
    raise SystemExit("LIVEROOM_JWT_SECRET is required for the distributed roles (every "
                     "edge must verify the same tokens)")


class RoleProcess:
    """One role's aiohttp application, services and timers."""

    def __init__(self, opts: RoleOptions, services: Services | None = None,
                 metrics: Metrics | None = None) -> None:
        """``services``: already open ones (tests share a store between
        in-process edges); else ``start`` opens them from ``opts``."""
        if opts.role not in ("edge", "router", "cdn"):
            raise SystemExit(f"unknown role {opts.role!r}")
        self.opts = opts
        self.metrics = metrics or Metrics()
        self.services: Services | None = services
        self.node: EdgeNode | None = None
        self.view: ClusterView | None = None
        self.heartbeat: Heartbeat | None = None
        self.runner: web.AppRunner | None = None
        self.quic: QuicEdge | None = None
        self.url = ""
        self.public_url = ""
        self._online: asyncio.TimerHandle | None = None
        self._sweeper: Sweeper | None = None

    async def start(self) -> RoleProcess:
        try:
            return await self._start()
        except BaseException:
            await self.stop()  # whatever was opened before the failure
            raise

    async def _start(self) -> RoleProcess:
        opts = self.opts
        s = self.services
        if s is None:
            s = self.services = await open_services(opts, self.metrics)
        view = self.view = ClusterView(s.store, s.online, big_threshold=opts.big_threshold,
                                       clock=time.time)
        if opts.role == "edge":
            app = self._edge_app(s, view)
        else:
            app = web.Application(middlewares=[errors_middleware()])
            app.router.add_get("/healthz", self._healthz)
            app.router.add_get("/metrics", self._metrics)
            if opts.role == "cdn":
                CdnOrigin(s.store, opts.cdn, self.metrics.registry).add_routes(app)
        add_route_endpoint(app, view)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self.runner.setup()
        # An edge's WebSockets get connections of their own (edge/ws_conn.py).
        # Every role's HTTP connections are timed (head, body, idle keep-alive).
        site = EdgeSite(self.runner, opts.host, opts.port) if opts.role == "edge" else \
            TimedSite(self.runner, opts.host, opts.port, timeouts=opts.config.http,
                      count=counter_of(self.metrics))
        await site.start()
        port = int(self.runner.addresses[0][1]) if self.runner.addresses else opts.port
        if opts.role == "edge":
            self.quic = await start_quic_edge(app, opts, port)
        self.url = f"http://{opts.host}:{port}"
        self.public_url = opts.public_url or f"ws://{opts.host}:{port}/ws"
        roles = ("edge",) if opts.role == "edge" else (opts.role,)
        info = NodeInfo(opts.node_id, opts.group, self.public_url, roles)
        self.heartbeat = Heartbeat(info=info, services=s, view=view, node=self.node,
                                   period=opts.heartbeat)
        await self.heartbeat.beat()  # the first view before we say we listen
        self.heartbeat.start()
        if self.node is not None:
            self._schedule_online()
        return self

    def _edge_app(self, s: Services, view: ClusterView) -> web.Application:
        opts = self.opts
        secret = _jwt_secret(opts)
        node = self.node = EdgeNode(node_id=opts.node_id, config=opts.config,
                                    jwt_secret=secret, store=s.store, bus=s.bus,
                                    registry=s.registry, inbox=s.inbox, metrics=self.metrics,
                                    shared_action_limiter=s.shared_action_limiter)
        node.gate = PlacementGate(view, opts.group)
        node.start()
        if isinstance(s.store, MemoryStateStore):
            # The embedded store (no --redis/--postgres): idle rooms leave memory.
            self._sweeper = sweep_idle_rooms(s.store, node, set(),
                                             opts.config.room_idle_seconds)
        cdn = CdnOrigin(s.store, opts.cdn, self.metrics.registry)
        app = build_app(node, jwt_secret=secret, api_key=opts.api_key, dev=opts.dev)
        cdn.add_routes(app)  # the polling origin answers on the edge's app

        async def close_connections(app: web.Application) -> None:
            node.stop()

        app.on_shutdown.append(close_connections)
        return app

    def _schedule_online(self) -> None:
        node = self.node
        assert node is not None
        interval = self.opts.config.online_interval

        def tick() -> None:
            try:
                node.tick_online()
            finally:
                self._online = asyncio.get_running_loop().call_later(interval, tick)

        self._online = asyncio.get_running_loop().call_later(interval, tick)

    async def _healthz(self, request: web.Request) -> web.Response:
        groups = self.view.placement.groups if self.view else {}
        return web.json_response({"status": "ok", "node": self.opts.node_id,
                                  "role": self.opts.role, "groups": sorted(groups)})

    async def _metrics(self, request: web.Request) -> web.Response:
        return metrics_response(self.metrics.registry)

    async def stop(self) -> None:
        """Deregister, close the clients (4101), close the services. Idempotent."""
        if self._online is not None:
            self._online.cancel()
            self._online = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        heartbeat, self.heartbeat = self.heartbeat, None
        if heartbeat is not None:
            await heartbeat.stop()
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()  # closes clients with 4101 (on_shutdown)
        quic, self.quic = self.quic, None
        if quic is not None:
            quic.close()
        if self.node is not None:
            self.node.stop()
        if self.services is not None:
            await self.services.close()


def env_list(name: str) -> list[str]:
    raw = os.environ.get(f"LIVEROOM_{name}", "")
    return [u.strip() for u in raw.split(",") if u.strip()]


def describe(proc: RoleProcess) -> dict[str, Any]:
    return {"role": proc.opts.role, "node": proc.opts.node_id, "group": proc.opts.group,
            "url": proc.url, "public_url": proc.public_url}
