"""The agents of a process, wired: their options, backends, characters,
links into the room, quota and interaction API (``AgentsService``).

The composition roots build it: ``liveroom serve`` with in-process links to
its edge node (``in_process_links``), ``liveroom agents`` with WebSocket
links (``llm_agents.role``). The command-line flags that fill
``AgentOptions`` are in ``liveroom.flags``. The backend ``auto`` uses
the embedded model when it is installed (``make llm``) and falls back to
``scripted`` with one clear log line otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from edge.auth import Identity, mint_token, parse_grants
from edge.node import EdgeNode
from llm_agents.backends.base import ModelBackend
from llm_agents.backends.scripted import ScriptedBackend
from llm_agents.character import SHIPPED_DIR, Character, CharacterError, load_characters
from llm_agents.gateway import GatewayBackend, GatewayMetrics, ModelServer
from llm_agents.gateway_queue import GatewayConfig
from llm_agents.interactions import Interactions, InteractionStore
from llm_agents.interactions_http import InteractionRoutes
from llm_agents.interactions_sqlite import SqliteInteractionStore
from llm_agents.link import FrameHandler, InProcessLink, RoomLink
from llm_agents.memory import MemoryLimits, MemoryStore
from llm_agents.memory_service import AgentMemory
from llm_agents.memory_sqlite import SqliteMemoryStore
from llm_agents.metrics import AgentMetrics
from llm_agents.policy import PolicyConfig
from llm_agents.quota import MemoryQuotaStore, QuotaLimits, QuotaStore
from llm_agents.runtime import AgentConfig, AgentRuntime, RoomAgent
from llm_agents.seating import Seating
from llm_agents.seats import Seat, SeatLimits, SeatStore
from llm_agents.seats_http import SeatRoutes
from llm_agents.seats_sqlite import SqliteSeatStore
from plumbing.breaker import CircuitBreaker
from room_router.nodes import NodeRegistry
from wire.errors import LiveroomError

log = logging.getLogger("liveroom.agents")

BACKEND_CHOICES = ("auto", "scripted", "embedded", "openai")
AGENT_TOKEN_TTL = 10 * 365 * 86400.0


@dataclass
class AgentOptions:
    enabled: bool = True
    room: str = "demo"
    characters: tuple[str, ...] = ("quinn",)
    characters_dir: Path | None = None
    backend: str = "auto"
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_model: str = ""
    openai_api_key: str = "not-needed"
    openai_timeout: float = 30.0
    openai_idle_timeout: float = 10.0
    openai_retries: int = 2
    breaker_threshold: int = 3
    breaker_reset: float = 10.0
    quota: QuotaLimits = field(default_factory=QuotaLimits)
    word_delay: float = 0.04
    stale_after: float = 20.0
    queue_size: int = 8
    delta_interval: float = 0.2
    big_room_members: int = 500
    big_room_delta_interval: float = 1.0
    embedded_threads: int = 2
    # Overrides every character's cooldown_s when set (tests, demos).
    cooldown: float | None = None
    # Quotas in Redis (shared by several agents processes) instead of memory.
    quota_redis: str | None = None
    # Days a finished interaction is kept (0: forever).
    interaction_retention_days: float = 7.0
    # What characters remember of rooms and viewers (docs/AGENTS.md, Memory).
    memory: MemoryLimits = field(default_factory=MemoryLimits)
    # Seats (llm_agents/seats.py): the bounds, and how often a process
    # renews its registry entry and re-reads the seats.
    seat_limits: SeatLimits = field(default_factory=SeatLimits)
    seat_period: float = 1.0
    # The model gateway's bounds (llm_agents/gateway_queue.py).
    gateway: GatewayConfig = field(default_factory=GatewayConfig)


def model_servers(opts: AgentOptions) -> list[str]:
    """The OpenAI-compatible servers of the model: ``--openai-base-url``
    is a comma-separated list."""
    return [u.strip() for u in opts.openai_base_url.split(",") if u.strip()]


def make_gateway(kind: str, opts: AgentOptions, metrics: GatewayMetrics) -> GatewayBackend:
    """The backend ``kind`` behind the model gateway: one queue, and for
    ``openai`` one server per base URL. With several, each retries a failed
    call once at most (a keep-alive connection the server closed meanwhile
    must not mark it down) before the gateway fails over to another."""
    if kind != "openai":
        backend = make_backend(kind, opts)
        return GatewayBackend(backend.label, [ModelServer(backend.label, backend)],
                              opts.gateway, metrics)
    urls = model_servers(opts)
    retries = opts.openai_retries if len(urls) == 1 else min(1, opts.openai_retries)
    servers = []
    for url in urls:
        backend = make_backend(kind, replace(opts, openai_base_url=url, openai_retries=retries))
        servers.append(ModelServer(url, backend, getattr(backend, "probe", None)))
    return GatewayBackend(opts.openai_model or "openai", servers, opts.gateway, metrics)


def make_backend(kind: str, opts: AgentOptions) -> ModelBackend:
    if kind == "scripted":
        return ScriptedBackend(opts.word_delay)
    if kind == "openai":
        try:
            from llm_agents.backends.openai_backend import OpenAIBackend
        except ImportError as exc:
            raise SystemExit(f"--agent-backend openai needs the openai package "
                             f"(pip install -e '.[agents]'): {exc}") from None

        return OpenAIBackend(opts.openai_base_url, opts.openai_model,
                             api_key=opts.openai_api_key, timeout=opts.openai_timeout,
                             idle_timeout=opts.openai_idle_timeout, retries=opts.openai_retries,
                             breaker=CircuitBreaker(opts.breaker_threshold, opts.breaker_reset))
    from llm_agents.backends.embedded import EmbeddedBackend, embedded_unavailable, find_smollm2

    why = embedded_unavailable()
    if why is not None:
        if kind == "embedded":
            raise SystemExit(f"--agent-backend embedded: {why}")
        log.warning("agents: embedded model unavailable (%s): characters use the scripted "
                    "backend", why)
        return ScriptedBackend(opts.word_delay)
    path = find_smollm2()
    assert path is not None
    return EmbeddedBackend(path, threads=opts.embedded_threads)


def known_characters(opts: AgentOptions) -> dict[str, Character]:
    """Every character a seat may name: the shipped ones and ``--characters``."""
    dirs = [SHIPPED_DIR] + ([opts.characters_dir] if opts.characters_dir else [])
    try:
        known = load_characters(dirs)
    except CharacterError as err:
        raise SystemExit(f"agents: {err}") from None
    if opts.cooldown is not None:
        known = {n: replace(c, cooldown_s=opts.cooldown) for n, c in known.items()}
    return known


def pick_characters(opts: AgentOptions) -> list[Character]:
    known = known_characters(opts)
    missing = [c for c in opts.characters if c not in known]
    if missing:
        raise SystemExit(f"agents: no character named {', '.join(missing)} "
                         f"(known: {', '.join(sorted(known))})")
    return [known[c] for c in opts.characters]


LinkFactory = Callable[[Character, FrameHandler], RoomLink]


def agent_credentials(character: Character, jwt_secret: str) -> tuple[Identity, str]:
    """The identity (role ``agent``) a character joins rooms as, and its
    token: server-side, it is admitted to every room, private ones too (a
    ``viewer`` grant of ``*``, which keeps it an agent)."""
    now = time.time()
    rooms = {"*": "viewer"}
    ident = Identity(character.name, character.display_name, "agent", now + AGENT_TOKEN_TTL,
                     parse_grants(rooms))
    return ident, mint_token(jwt_secret, ident.user, ident.name, ident.role, now,
                             AGENT_TOKEN_TTL, rooms)


def in_process_links(node: EdgeNode, jwt_secret: str) -> LinkFactory:
    """Agents as connections of ``node`` in this process (``liveroom serve``)."""
    def make(character: Character, on_frame: FrameHandler) -> RoomLink:
        return InProcessLink(node, *agent_credentials(character, jwt_secret), on_frame)
    return make


class AgentsService:
    """The agents of a process: their links into the room, the quota, the
    interaction API. ``liveroom serve`` seats them through in-process links
    to its edge node; ``liveroom agents`` through WebSocket links to an edge."""

    def __init__(self, opts: AgentOptions, data_dir: Path, links: LinkFactory,
                 verify: Callable[[object, float], Identity],
                 clock: Callable[[], float] = time.time,
                 quota: QuotaStore | None = None,
                 registry: CollectorRegistry | None = None,
                 store: InteractionStore | None = None,
                 memory_store: MemoryStore | None = None,
                 seats: SeatStore | None = None, nodes: NodeRegistry | None = None,
                 node_id: str = "agents", url: str = "",
                 api_key: str | None = None) -> None:
        self.opts = opts
        self._redis: Any = None
        if quota is None and opts.quota_redis:
            # Imported here: redis-py is an extra, and the embedded default
            # runs without it.
            from llm_agents.quota_redis import RedisQuotaStore
            from storage.redis_conn import open_redis

            self._redis = open_redis(opts.quota_redis)
            quota = RedisQuotaStore(self._redis, opts.quota)
        self.quota = quota or MemoryQuotaStore(opts.quota)
        self.runtime = AgentRuntime()
        # ``stop`` closes the store, whoever opened it.
        self.store = store or SqliteInteractionStore(data_dir / "interactions.sqlite3")
        self.interactions = Interactions(self.runtime, self.store, clock)
        self.memory = AgentMemory(
            memory_store or SqliteMemoryStore(data_dir / "memory.sqlite3"), opts.memory, clock)
        self.routes = InteractionRoutes(self.interactions, verify, clock)
        self._backends: dict[str, ModelBackend] = {}
        self.registry = registry or CollectorRegistry()
        self._metrics = AgentMetrics(self.registry)
        # Every model call goes through the gateway (llm_agents/gateway.py).
        self._gateway_metrics = GatewayMetrics(self.registry)
        self._config = AgentConfig(policy=PolicyConfig(opts.queue_size, opts.stale_after),
                                   delta_interval=opts.delta_interval,
                                   big_room_members=opts.big_room_members,
                                   big_room_delta_interval=opts.big_room_delta_interval)
        self._links, self._clock = links, clock
        self.characters = known_characters(opts)
        # The start-up seats (--agent-room, --agent-characters): stored at
        # every start, run by whichever process owns them.
        self.initial = [Seat(opts.room, c.name) for c in pick_characters(opts)] \
            if opts.enabled else []
        self.seating = Seating(store=seats or SqliteSeatStore(data_dir / "seats.sqlite3"),
                               node_id=node_id, limits=opts.seat_limits, runtime=self.runtime,
                               make_agent=self._agent, registry=nodes, url=url,
                               period=opts.seat_period, clock=clock)
        self.seat_routes = SeatRoutes(self.seating, self.characters, api_key,
                                      self.routes.list_agents)

    def _agent(self, seat: Seat) -> RoomAgent:
        """The agent of a seat this process owns, its backend made once per kind."""
        character = self.characters[seat.character]
        opts = self.opts
        kind = opts.backend if character.backend == "default" or opts.backend != "auto" \
            else character.backend
        backend = self._backends.get(kind)
        if backend is None:
            backend = self._backends[kind] = make_gateway(kind, opts, self._gateway_metrics)
        return RoomAgent(character, seat.room, backend, self.quota, self._config,
                         partial(self._links, character), self._clock, self._metrics,
                         self.memory)

    def add_routes(self, app: web.Application) -> None:
        self.routes.add_routes(app, list_agents=False)
        self.seat_routes.add_routes(app)

    async def start(self) -> None:
        await self.store.open()
        await self.memory.store.open()
        self.interactions.keep_for(self.opts.interaction_retention_days * 86400.0)
        self.memory.keep_for()
        await self.seating.store.open()
        for seat in self.initial:
            try:
                await self.seating.store.add(seat, self.opts.seat_limits.per_room,
                                             self.opts.seat_limits.total)
            except LiveroomError as err:
                log.warning("agents: start-up seat %s not stored: %s", seat.key, err)
        await self.runtime.start()
        await self.seating.start()

    async def stop(self) -> None:
        await self.interactions.close()
        await self.seating.stop()
        await self.seating.store.close()
        for backend in self._backends.values():
            await backend.close()
        await self.memory.close()
        await self.store.close()
        await self.memory.store.close()
        if self._redis is not None:
            await self._redis.aclose()
