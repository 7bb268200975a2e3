"""Wiring of the agents into a process: options, command-line flags, backends.

``liveroom serve`` starts the demo character(s) in the demo room by default
(``--no-agents`` turns them off, ``--agent-backend`` picks the model). The
backend ``auto`` uses the embedded model when it is installed (``make llm``)
and falls back to ``scripted`` with one clear log line otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from edge.auth import Identity, mint_token
from edge.node import EdgeNode
from llm_agents.backends.base import ModelBackend
from llm_agents.backends.scripted import ScriptedBackend
from llm_agents.breaker import CircuitBreaker
from llm_agents.character import SHIPPED_DIR, Character, CharacterError, load_characters
from llm_agents.interactions import Interactions, InteractionStore
from llm_agents.interactions_http import InteractionRoutes
from llm_agents.interactions_sqlite import SqliteInteractionStore
from llm_agents.link import FrameHandler, InProcessLink, RoomLink
from llm_agents.metrics import AgentMetrics
from llm_agents.policy import PolicyConfig
from llm_agents.quota import MemoryQuotaStore, QuotaLimits, QuotaStore
from llm_agents.runtime import AgentConfig, AgentRuntime, RoomAgent

log = logging.getLogger("liveroom.agents")

BACKEND_CHOICES = ("auto", "scripted", "embedded", "openai")
AGENT_TOKEN_TTL = 10 * 365 * 86400.0


def _env(name: str, default: str) -> str:
    return os.environ.get(f"LIVEROOM_{name}", default)


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


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("agents (LLM characters; docs/AGENTS.md)")
    g.add_argument("--no-agents", action="store_true",
                   help="start no agent (default: the demo character in the demo room)")
    g.add_argument("--agent-room", default=_env("AGENT_ROOM", "demo"))
    g.add_argument("--agent-characters", default=_env("AGENT_CHARACTERS", "quinn"),
                   help="comma-separated character names to seat in --agent-room")
    g.add_argument("--characters", type=Path, default=_env("CHARACTERS", "") or None,
                   help="a directory of extra character TOML files")
    g.add_argument("--agent-backend", choices=BACKEND_CHOICES,
                   default=_env("AGENT_BACKEND", "auto"),
                   help="auto: embedded when installed (make llm), else scripted")
    g.add_argument("--openai-base-url", default=_env("OPENAI_BASE_URL",
                                                      "http://127.0.0.1:8000/v1"))
    g.add_argument("--openai-model", default=_env("OPENAI_MODEL", ""))
    g.add_argument("--openai-timeout", type=float, default=float(_env("OPENAI_TIMEOUT", "30")))
    g.add_argument("--openai-idle-timeout", type=float,
                   default=float(_env("OPENAI_IDLE_TIMEOUT", "10")),
                   help="seconds without a chunk before a call counts as failed")
    g.add_argument("--openai-retries", type=int, default=int(_env("OPENAI_RETRIES", "2")))
    g.add_argument("--breaker-threshold", type=int, default=int(_env("BREAKER_THRESHOLD", "3")))
    g.add_argument("--breaker-reset", type=float, default=float(_env("BREAKER_RESET", "10")),
                   help="seconds the breaker stays open before a probe call")
    g.add_argument("--quota-room-per-day", type=int,
                   default=int(_env("QUOTA_ROOM_PER_DAY", "200000")),
                   help="tokens a day per room (0: unlimited)")
    g.add_argument("--quota-user-per-day", type=int,
                   default=int(_env("QUOTA_USER_PER_DAY", "20000")),
                   help="tokens a day per user (0: unlimited)")
    g.add_argument("--quota-redis", default=_env("QUOTA_REDIS", "") or None,
                   help="redis://host:port/db (or redis+cluster://): keep the quotas in Redis "
                        "(several agents processes; liveroom agents --redis does it too); "
                        "default: in this process's memory")
    g.add_argument("--agent-word-delay", type=float, default=float(_env("AGENT_WORD_DELAY",
                                                                        "0.04")),
                   help="seconds between the words of a scripted reply")
    g.add_argument("--agent-stale-after", type=float,
                   default=float(_env("AGENT_STALE_AFTER", "20")),
                   help="seconds after which an unanswered trigger (or a reply in flight) "
                        "is stale and dropped")
    g.add_argument("--agent-big-room", type=int, default=int(_env("AGENT_BIG_ROOM", "500")),
                   help="members from which a room is big: a reply's deltas then go out every "
                        "--agent-big-room-delta-interval seconds (each is a message to every "
                        "member)")
    g.add_argument("--agent-big-room-delta-interval", type=float,
                   default=float(_env("AGENT_BIG_ROOM_DELTA_INTERVAL", "1.0")))
    g.add_argument("--embedded-threads", type=int,
                   default=int(_env("EMBEDDED_THREADS", "2")),
                   help="CPU threads of the embedded model")
    g.add_argument("--interaction-retention-days", type=float,
                   default=float(_env("INTERACTION_RETENTION_DAYS", "7")),
                   help="days a finished direct interaction (and its stream) is kept; "
                        "0: forever")
    g.add_argument("--agent-cooldown", type=float, default=None,
                   help="override every character's cooldown_s (seconds)")


def agent_options(args: argparse.Namespace) -> AgentOptions:
    if args.interaction_retention_days < 0:
        raise SystemExit("--interaction-retention-days must be 0 (forever) or more")
    return AgentOptions(
        enabled=not args.no_agents, room=args.agent_room,
        characters=tuple(c.strip() for c in args.agent_characters.split(",") if c.strip()),
        characters_dir=args.characters, backend=args.agent_backend,
        openai_base_url=args.openai_base_url, openai_model=args.openai_model,
        openai_api_key=os.environ.get("LIVEROOM_OPENAI_API_KEY", "not-needed"),
        openai_timeout=args.openai_timeout, openai_idle_timeout=args.openai_idle_timeout,
        openai_retries=args.openai_retries, breaker_threshold=args.breaker_threshold,
        breaker_reset=args.breaker_reset,
        quota=QuotaLimits(args.quota_room_per_day, args.quota_user_per_day),
        word_delay=args.agent_word_delay, stale_after=args.agent_stale_after,
        cooldown=args.agent_cooldown, embedded_threads=args.embedded_threads,
        quota_redis=args.quota_redis, big_room_members=args.agent_big_room,
        big_room_delta_interval=args.agent_big_room_delta_interval,
        interaction_retention_days=args.interaction_retention_days)


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


def pick_characters(opts: AgentOptions) -> list[Character]:
    dirs = [SHIPPED_DIR] + ([opts.characters_dir] if opts.characters_dir else [])
    try:
        known = load_characters(dirs)
    except CharacterError as err:
        raise SystemExit(f"agents: {err}") from None
    missing = [c for c in opts.characters if c not in known]
    if missing:
        raise SystemExit(f"agents: no character named {', '.join(missing)} "
                         f"(known: {', '.join(sorted(known))})")
    chosen = [known[c] for c in opts.characters]
    if opts.cooldown is not None:
        chosen = [replace(c, cooldown_s=opts.cooldown) for c in chosen]
    return chosen


LinkFactory = Callable[[Character, FrameHandler], RoomLink]


def agent_credentials(character: Character, jwt_secret: str) -> tuple[Identity, str]:
    """The identity (role ``agent``) a character joins rooms as, and its token."""
    now = time.time()
    ident = Identity(character.name, character.display_name, "agent", now + AGENT_TOKEN_TTL)
    return ident, mint_token(jwt_secret, ident.user, ident.name, ident.role, now,
                             AGENT_TOKEN_TTL)


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
                 store: InteractionStore | None = None) -> None:
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
        self.routes = InteractionRoutes(self.interactions, verify, clock)
        self._backends: dict[str, ModelBackend] = {}
        self.registry = registry or CollectorRegistry()
        metrics = AgentMetrics(self.registry)
        config = AgentConfig(policy=PolicyConfig(opts.queue_size, opts.stale_after),
                             delta_interval=opts.delta_interval,
                             big_room_members=opts.big_room_members,
                             big_room_delta_interval=opts.big_room_delta_interval)
        for character in pick_characters(opts):
            kind = opts.backend if character.backend == "default" or opts.backend != "auto" \
                else character.backend
            backend = self._backends.get(kind)
            if backend is None:
                backend = self._backends[kind] = make_backend(kind, opts)
            self.runtime.add(RoomAgent(character, opts.room, backend, self.quota, config,
                                       partial(links, character), clock, metrics))

    def add_routes(self, app: web.Application) -> None:
        self.routes.add_routes(app)

    async def start(self) -> None:
        await self.store.open()
        self.interactions.keep_for(self.opts.interaction_retention_days * 86400.0)
        await self.runtime.start()

    async def stop(self) -> None:
        await self.interactions.close()
        await self.runtime.stop()
        for backend in self._backends.values():
            await backend.close()
        await self.store.close()
        if self._redis is not None:
            await self._redis.aclose()
