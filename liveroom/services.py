"""The services a ``liveroom`` process stands on, opened through one path.

``Services`` is what every edge, router and cdn is built on: the bus, the
state store, the connection registry, the peer inbox, the node registry,
the online counts, the room history and the presence lists, each behind its
protocol (``room_router``, ``state_versions``). Two ways to get them, one type:

- ``embedded_services``: everything in this process (memory bus, memory
  state and registries, a SQLite inbox); what ``liveroom serve`` runs on, and
  what a role falls back to for each service it is not given;
- ``open_services``: what ``--nats``, ``--redis`` and ``--postgres`` name, the
  embedded piece for each one left out (logged as a warning: only right for a
  single process). With both Redis and PostgreSQL it opens the full tier in
  one call (``open_distributed_stores``): the two-tier state store, the peer
  inbox, the connection and node registries, the online counts and the
  shared action limit, on one Redis client and one PostgreSQL pool.

``Services.open()`` runs what must be awaited before use (the SQLite
inbox of the embedded set); ``close()`` closes in the reverse order of
opening.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.config import EdgeConfig
from edge.metrics import Metrics
from liveroom.events_wiring import cluster_events
from liveroom.options import RoleOptions
from room_router.bus import Bus, MemoryBus
from room_router.events import NO_EVENTS, EventSink
from room_router.history import HistoryStore, MemoryHistoryStore
from room_router.history_redis import RedisHistoryStore
from room_router.inbox import Inbox, SqliteInbox
from room_router.inbox_postgres import PostgresInbox
from room_router.moderation import MemorySanctions, Sanctions
from room_router.moderation_redis import RedisSanctions
from room_router.nodes import (
    MemoryNodeRegistry,
    MemoryOnlineCounts,
    NodeRegistry,
    OnlineCounts,
)
from room_router.nodes_redis import RedisNodeRegistry, RedisOnlineCounts
from room_router.outbox import SqliteOutbox
from room_router.presence import MemoryPresenceStore, PresenceStore
from room_router.presence_redis import RedisPresenceStore
from room_router.ratelimit import Rate, SharedRateLimiter
from room_router.ratelimit_redis import RedisRateLimiter
from room_router.registry import ConnectionRegistry, MemoryConnectionRegistry
from room_router.registry_redis import RedisConnectionRegistry
from state_versions.store import DEFAULT_MAX_SECTIONS, MemoryStateStore, StateStore
from state_versions.store_postgres import PostgresStateStore
from state_versions.store_redis import RedisStateStore
from state_versions.store_tiered import TieredStateStore
from storage.postgres import open_database
from storage.redis_conn import RedisClient, open_redis

log = logging.getLogger("liveroom.services")


@dataclass(slots=True)
class DistributedStores:
    redis: RedisClient
    state: TieredStateStore
    inbox: PostgresInbox
    registry: RedisConnectionRegistry
    nodes: RedisNodeRegistry
    online: RedisOnlineCounts
    action_limiter: RedisRateLimiter
    history: RedisHistoryStore
    presence: RedisPresenceStore
    sanctions: RedisSanctions

    async def close(self, timeout: float = 5.0) -> None:
        """Flush the write-behind (at most ``timeout``), then close the Redis
        client and the PostgreSQL pool."""
        try:
            await self.state.close(timeout)
        finally:
            await self.redis.aclose()
            await self.state.durable.pool.close()


async def open_distributed_stores(redis_url: str, postgres_dsn: str, *,
                                  action_rate: Rate | None = None,
                                  registry_ttl: float = 30.0,
                                  pool_size: int = 10,
                                  write_behind_max: int = 10_000,
                                  max_sections: int = DEFAULT_MAX_SECTIONS,
                                  idle_ttl: float | None = None) -> DistributedStores:
    """Connect, migrate, and build every adapter (see the module docstring).
    ``action_rate``: the shared per-user, per-room action limit (default:
    ``EdgeConfig``'s); ``max_sections``: sections per room; ``idle_ttl``:
    seconds an unused room stays in Redis once PostgreSQL has it (None:
    forever)."""
    if action_rate is None:
        action_rate = EdgeConfig().action_rate
    redis = open_redis(redis_url)
    try:
        pool = await open_database(postgres_dsn, min_size=2, max_size=pool_size)
    except BaseException:
        await redis.aclose()
        raise
    try:
        # The state store and the inbox share the one pool; it is closed by
        # DistributedStores.close, so neither owns it.
        durable = await PostgresStateStore.from_pool(pool)
        hot = await RedisStateStore.open(redis, max_sections=max_sections)
        return DistributedStores(
            redis=redis,
            state=TieredStateStore(hot, durable, max_pending=write_behind_max,
                                   idle_ttl=idle_ttl),
            inbox=PostgresInbox(pool),
            registry=RedisConnectionRegistry(redis, ttl=registry_ttl),
            nodes=RedisNodeRegistry(redis),
            online=RedisOnlineCounts(redis),
            action_limiter=RedisRateLimiter(redis, action_rate),
            history=RedisHistoryStore(redis),
            presence=RedisPresenceStore(redis),
            sanctions=RedisSanctions(redis),
        )
    except BaseException:
        await redis.aclose()
        await pool.close()
        raise


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
    # What must be awaited before use (an embedded set's SQLite inbox).
    openers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Room history (room_router/history.py): memory, or Redis with --redis.
    history: HistoryStore = field(default_factory=MemoryHistoryStore)
    # Each edge's member lists of the rooms that keep presence.
    presence: PresenceStore = field(default_factory=MemoryPresenceStore)
    # Bans and mutes (docs/MODERATION.md): in this process unless --redis.
    sanctions: Sanctions = field(default_factory=MemorySanctions)
    # Events to the backend (liveroom/events_wiring.py); NO_EVENTS: off.
    events: EventSink = NO_EVENTS

    async def open(self) -> None:
        openers, self.openers = self.openers, []
        for open_ in openers:
            await open_()

    async def close(self) -> None:
        await close_all(self.closers)


def memory_store(config: EdgeConfig) -> MemoryStateStore:
    """The embedded state store: rooms idle for ``room_idle_seconds`` may be
    dropped (by the edge's sweep, ``liveroom.wiring.Sweeper``)."""
    return MemoryStateStore(max_sections=config.max_sections,
                            idle_for=config.room_idle_seconds)


def embedded_services(config: EdgeConfig, inbox_path: Path,
                      outbox: SqliteOutbox | None = None) -> Services:
    """Every service in this process; ``await open()`` before use.
    ``outbox``: the events' sink (liveroom/events_wiring.py), if any."""
    inbox = SqliteInbox(inbox_path)
    services = Services(MemoryBus(), memory_store(config), MemoryConnectionRegistry(), inbox,
                        MemoryNodeRegistry(), MemoryOnlineCounts(), closers=[inbox.close],
                        openers=[inbox.open])
    if outbox is not None:
        services.events = outbox
        services.openers.append(outbox.open)
        services.closers.append(outbox.close)
    return services


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
        services = await _open_services(opts, metrics, closers)
        if opts.role == "edge":
            sink = await cluster_events(opts.events, opts.nats, opts.subject_prefix,
                                        opts.node_id, metrics.registry)
            if sink is not None:
                services.events = sink
                closers.append(sink.close)
        return services
    except BaseException:
        await close_all(closers)
        raise


async def _open_services(opts: RoleOptions, metrics: Metrics,
                         closers: list[Callable[[], Awaitable[None]]]) -> Services:
    # Connections are re-asserted by every heartbeat: expire after a few.
    registry_ttl = max(10.0, 5 * opts.heartbeat)
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
    history: HistoryStore = MemoryHistoryStore()
    presence: PresenceStore
    sanctions: Sanctions
    if opts.redis and opts.postgres:
        # The full deployment: every adapter from scale-data's one call (the
        # two-tier store: Redis hot, PostgreSQL durable; the shared limit).
        stores = await open_distributed_stores(
            opts.redis, opts.postgres, action_rate=opts.config.action_rate,
            registry_ttl=registry_ttl,
            max_sections=opts.config.max_sections, idle_ttl=opts.config.room_idle_seconds)
        closers.append(stores.close)
        log.info("redis %s + postgres: tiered state, inbox, registries, counts, limits",
                 opts.redis)
        return Services(bus, stores.state, stores.registry, stores.inbox, stores.nodes,
                        stores.online, closers, shared_action_limiter=stores.action_limiter,
                        history=stores.history, presence=stores.presence,
                        sanctions=stores.sanctions)
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
        client = open_redis(opts.redis)
        closers.append(client.aclose)
        # Redis is the only copy here: its rooms never expire.
        store = await RedisStateStore.open(client, max_sections=opts.config.max_sections)
        registry = RedisConnectionRegistry(client, ttl=registry_ttl)
        nodes = RedisNodeRegistry(client)
        online = RedisOnlineCounts(client)
        history = RedisHistoryStore(client)
        presence = RedisPresenceStore(client)
        sanctions = RedisSanctions(client)
        log.info("redis: %s (state, registries, online counts, history, presence, bans and "
                 "mutes)", opts.redis)
    else:
        store = pg_store if pg_store is not None else memory_store(opts.config)
        registry = MemoryConnectionRegistry()
        nodes = MemoryNodeRegistry()
        online = MemoryOnlineCounts()
        presence = MemoryPresenceStore()
        sanctions = MemorySanctions()
        log.warning("no --redis: registries, counts, bans and mutes are in this process only")
    return Services(bus, store, registry, inbox, nodes, online, closers, history=history,
                    presence=presence, sanctions=sanctions)
