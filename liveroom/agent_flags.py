"""The agents' command-line flags (``liveroom serve`` and ``liveroom
agents``), each with its ``LIVEROOM_*`` environment default, and the
``AgentOptions`` they make (docs/AGENTS.md lists them).

``liveroom serve`` starts the demo character(s) in the demo room by default
(``--no-agents`` turns them off, ``--agent-backend`` picks the model).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from llm_agents.quota import QuotaLimits
from llm_agents.service import BACKEND_CHOICES, AgentOptions


def _env(name: str, default: str) -> str:
    return os.environ.get(f"LIVEROOM_{name}", default)


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
