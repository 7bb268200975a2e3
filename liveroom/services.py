"""The distributed deployment's data services, opened in one call for a
composition root (``liveroom edge``, ``router``, ... of issue 4, part 2).

``open_distributed_stores(redis_url, postgres_dsn)`` connects to Redis
(standalone ``redis://`` or Cluster ``redis+cluster://``) and to PostgreSQL
(one pool, migrated at start-up), and answers every adapter built on them:
the two-tier state store, the peer inbox, the connection and node
registries, the online counts and the shared action limit. ``close()``
flushes the write-behind and closes the connections.

``heartbeat`` is what an edge's heartbeat timer does to the data layer, in
one call: register the node, re-assert its connections, report its rooms'
member counts. Run every ``ttl / 3`` seconds, it also rebuilds all three
after Redis lost its data, within one period.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from room_router.inbox_postgres import PostgresInbox
from room_router.nodes import NodeInfo
from room_router.nodes_redis import RedisNodeRegistry, RedisOnlineCounts
from room_router.ratelimit import Rate
from room_router.ratelimit_redis import RedisRateLimiter
from room_router.registry_redis import RedisConnectionRegistry
from state_versions.store import DEFAULT_MAX_SECTIONS
from state_versions.store_postgres import PostgresStateStore
from state_versions.store_redis import RedisStateStore
from state_versions.store_tiered import TieredStateStore
from storage.postgres import open_database
from storage.redis_conn import RedisClient, open_redis


@dataclass(slots=True)
class DistributedStores:
    redis: RedisClient
    state: TieredStateStore
    inbox: PostgresInbox
    registry: RedisConnectionRegistry
    nodes: RedisNodeRegistry
    online: RedisOnlineCounts
    action_limiter: RedisRateLimiter

    async def heartbeat(self, node: NodeInfo, *, connections: Iterable[tuple[str, int]],
                        counts: Mapping[str, int], ttl: float, now: float) -> None:
        """Register ``node`` (expiring ``ttl`` after ``now``), re-assert its
        (user, connection id) pairs and report its rooms' local counts."""
        await self.nodes.heartbeat(node, ttl, now)
        await self.registry.refresh(node.node_id, connections)
        await self.online.report(node.node_id, counts, ttl, now)

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
        from edge.config import EdgeConfig

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
        )
    except BaseException:
        await redis.aclose()
        await pool.close()
        raise
