"""``liveroom agents``: the characters as a process of their own (composition
root; the links are in ``llm_agents.role``).

With the service flags every role shares (``--nats``, ``--redis``,
``--postgres``, or ``LIVEROOM_NATS``/``_REDIS``/``_POSTGRES``):

- ``--redis``: the token quotas and the characters' memory live in Redis
  (shared by every agents process), and without ``--edge-url`` each character joins its room at the
  owner edge the node registry names (as ``GET /v1/route`` answers);
- ``--nats``: the characters' words go on the bus to the room's subject
  (one message for every edge of the room, not throttled by the per-user
  action rate);
- ``--postgres``: the direct interactions are stored in PostgreSQL (shared,
  so any agents process can replay any stream), else in SQLite under
  ``--data-dir``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from edge.auth import verify_token
from edge.http_site import TimedSite
from edge.web import MAX_API_BODY, errors_middleware, metrics_response
from liveroom.flags import (
    add_agent_arguments,
    add_http_arguments,
    add_service_arguments,
    agent_options,
    http_timeouts,
)
from liveroom.roles_cli import until_stopped
from liveroom.services import close_all
from llm_agents.interactions import InteractionStore
from llm_agents.memory import MemoryStore
from llm_agents.quota import QuotaStore
from llm_agents.role import BusWords, fixed_edge, registry_edges, websocket_links
from llm_agents.seats import SeatStore
from llm_agents.service import AgentOptions, AgentsService
from room_router.nodes import NodeRegistry

log = logging.getLogger("liveroom.agents")

DEFAULT_EDGE_URL = "ws://127.0.0.1:8080/ws"


def add_agents_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``agents`` sub-command, with the service flags every role takes."""
    p: argparse.ArgumentParser = sub.add_parser(
        "agents", help="run the LLM characters as their own process, connected to an edge "
        "over WebSocket")
    p.add_argument("--edge-url", default=os.environ.get("LIVEROOM_EDGE_URL") or None,
                   help="the edge the characters connect to (a redirect is followed); "
                        "default: the room's owner from the node registry with --redis, "
                        "else ws://127.0.0.1:8080/ws")
    p.add_argument("--host", default=os.environ.get("LIVEROOM_AGENTS_HOST", "127.0.0.1"),
                   help="where the interaction API listens")
    p.add_argument("--port", type=int, default=int(os.environ.get("LIVEROOM_AGENTS_PORT",
                                                                  "8090")))
    p.add_argument("--node-id", default=os.environ.get("LIVEROOM_NODE_ID")
                   or f"agents-{socket.gethostname()}",
                   help="this process's id in the shared interaction store (--postgres): "
                        "one per agents process, the same across its restarts")
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("LIVEROOM_DATA_DIR", "data")))
    p.add_argument("--agent-delta-interval", type=float, default=None,
                   help="seconds between two deltas of a reply (default: 0.3 over the "
                        "WebSocket, inside the edge's default 5 actions a second; 0.2 on "
                        "the bus with --nats)")
    p.add_argument("--log-level", default=os.environ.get("LIVEROOM_LOG_LEVEL", "INFO"))
    add_service_arguments(p)
    add_http_arguments(p)
    add_agent_arguments(p)
    return p


async def _run(args: argparse.Namespace, secret: str) -> int:
    opts = agent_options(args)
    # What --nats, --redis and --postgres open, closed in reverse at the end.
    closers: list[Callable[[], Awaitable[Any]]] = []
    try:
        service = await _service(args, opts, secret, closers)
    except BaseException:
        await close_all(closers)
        raise
    # Errors answered as every API of ours answers them (docs/PROTOCOL.md).
    app = web.Application(middlewares=[errors_middleware()], client_max_size=MAX_API_BODY)
    service.add_routes(app)

    async def metrics(request: web.Request) -> web.Response:
        return metrics_response(service.registry)

    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
        site = TimedSite(runner, args.host, args.port, timeouts=http_timeouts(args))
        await site.start()
        port = int(runner.addresses[0][1]) if runner.addresses else args.port
        service.seating.url = f"http://{args.host}:{port}"
        await service.start()
        log.info("agents listening on http://%s:%d (%s)", args.host, port,
                 json.dumps(_describe(args)))
        await until_stopped()
    finally:
        await service.stop()
        await runner.cleanup()
        await close_all(closers)
    return 0


def _describe(args: argparse.Namespace) -> dict[str, Any]:
    return {"node_id": args.node_id, "edge": args.edge_url or ("registry" if args.redis
                                                                else DEFAULT_EDGE_URL),
            "bus": bool(args.nats), "quota": "redis" if args.redis or args.quota_redis
            else "memory", "memory": "redis" if args.redis else "sqlite",
            "interactions": "postgres" if args.postgres else "sqlite"}


async def _service(args: argparse.Namespace, opts: AgentOptions, secret: str,
                   closers: list[Callable[[], Awaitable[Any]]]) -> AgentsService:
    """The service with what the flags ask for: the quota and the owner
    lookup in Redis, the words on NATS, the interactions in PostgreSQL."""
    # Imported here: the service clients are the distributed extra, and the
    # agents process runs without them (--edge-url only).
    from llm_agents.interactions_postgres import open_postgres_interactions
    from llm_agents.memory_redis import RedisMemoryStore
    from llm_agents.quota_redis import RedisQuotaStore
    from llm_agents.seats_redis import RedisSeatStore
    from room_router.bus_nats import NatsBus
    from room_router.nodes_redis import RedisNodeRegistry
    from storage.redis_conn import open_redis

    quota: QuotaStore | None = None
    memory: MemoryStore | None = None
    seats: SeatStore | None = None
    nodes: NodeRegistry | None = None
    locate = fixed_edge(args.edge_url or DEFAULT_EDGE_URL)
    if args.redis:
        redis = open_redis(args.redis)
        closers.append(redis.aclose)
        quota = RedisQuotaStore(redis, opts.quota)
        memory = RedisMemoryStore(redis, opts.memory.retention_s)
        # The seats and the live agents processes, shared: each seat has
        # one owner among them (llm_agents/seating.py).
        seats, nodes = RedisSeatStore(redis), RedisNodeRegistry(redis)
        if not args.edge_url:
            locate = registry_edges(nodes)
    words: BusWords | None = None
    if args.nats:
        bus = await NatsBus.connect(args.nats, name=args.node_id, prefix=args.subject_prefix)
        closers.append(bus.close)
        words = BusWords(bus)
    opts.delta_interval = args.agent_delta_interval if args.agent_delta_interval is not None \
        else (0.2 if words is not None else 0.3)
    store: InteractionStore | None = None
    if args.postgres:
        store = await open_postgres_interactions(args.postgres, args.node_id)
    return AgentsService(opts, args.data_dir, websocket_links(locate, secret, words),
                         lambda token, now: verify_token(token, secret, now),
                         quota=quota, store=store, memory_store=memory, seats=seats,
                         nodes=nodes, node_id=args.node_id,
                         api_key=os.environ.get("LIVEROOM_API_KEY"))


def run_agents(args: argparse.Namespace) -> int:
    secret = os.environ.get("LIVEROOM_JWT_SECRET")
    if not secret:
        raise SystemExit("liveroom agents needs LIVEROOM_JWT_SECRET (the edge's secret)")
    if args.redis and args.quota_redis and args.redis != args.quota_redis:
        raise SystemExit("liveroom agents: --redis and --quota-redis name different servers; "
                         "give --redis only")
    return asyncio.run(_run(args, secret))
