"""The model gateway's flags (``liveroom serve`` and ``liveroom agents``;
docs/AGENTS.md, "The model gateway"), next to the agents' in
``liveroom.flags``: defaults come from ``GatewayConfig``, every value is
checked against its documented bounds at start."""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from llm_agents.gateway_queue import GatewayConfig
from llm_agents.quota import TierLimits

# Bounds of the flags (docs/AGENTS.md): a typo must not build a queue of a
# billion calls or a cap no server can take.
MAX_CONCURRENCY = 256
MAX_QUEUE = 10_000
MAX_WAIT_S = 600.0
MAX_SERVERS = 16
MAX_TIERS = 16
_TIER_NAME = re.compile(r"[a-z0-9_-]{1,32}\Z")
_TIER_FIELDS = ("tokens_per_day", "tokens_per_month", "requests_per_day", "requests_per_month")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"LIVEROOM_{name}", default)


def add_gateway_arguments(parser: argparse.ArgumentParser) -> None:
    d = GatewayConfig()
    g = parser.add_argument_group("model gateway (docs/AGENTS.md)")
    g.add_argument("--model-concurrency", type=int,
                   default=_env("MODEL_CONCURRENCY", str(d.concurrency)),
                   help=f"model calls in flight per model server (1..{MAX_CONCURRENCY})")
    g.add_argument("--model-queue", type=int, default=_env("MODEL_QUEUE", str(d.queue_size)),
                   help=f"model calls waiting per model; one more is refused at once "
                        f"(model_busy, queue_full; 1..{MAX_QUEUE})")
    g.add_argument("--model-queue-wait", type=float,
                   default=_env("MODEL_QUEUE_WAIT", str(d.max_wait_s)),
                   help="seconds a model call may wait for a slot before it is refused "
                        f"(model_busy, queue_timeout; 0.05..{MAX_WAIT_S:g})")
    g.add_argument("--model-short-at", type=float, default=_env("MODEL_SHORT_AT",
                                                                str(d.short_at)),
                   help="calls waiting per slot from which replies are shortened (0: never)")
    g.add_argument("--model-short-factor", type=float,
                   default=_env("MODEL_SHORT_FACTOR", str(d.short_factor)),
                   help="the share of a reply's token limit granted under load (0.1..1)")
    g.add_argument("--model-health-interval", type=float,
                   default=_env("MODEL_HEALTH_INTERVAL", str(d.health_interval_s)),
                   help="seconds between two health probes of each model server (0.1..300)")
    g.add_argument("--quota-tiers", type=Path, default=_env("QUOTA_TIERS", "") or None,
                   help="a TOML file of user quota tiers (tokens and requests, per day and "
                        "per month), picked by the token's tier claim")


def gateway_config(args: argparse.Namespace) -> GatewayConfig:
    """The flags as a ``GatewayConfig``; SystemExit naming a value out of bounds."""
    checks = (
        (1 <= args.model_concurrency <= MAX_CONCURRENCY,
         f"--model-concurrency must be 1..{MAX_CONCURRENCY}"),
        (1 <= args.model_queue <= MAX_QUEUE, f"--model-queue must be 1..{MAX_QUEUE}"),
        (0.05 <= args.model_queue_wait <= MAX_WAIT_S,
         f"--model-queue-wait must be 0.05..{MAX_WAIT_S:g} seconds"),
        (0 <= args.model_short_at <= 1000, "--model-short-at must be 0..1000"),
        (0.1 <= args.model_short_factor <= 1, "--model-short-factor must be 0.1..1"),
        (0.1 <= args.model_health_interval <= 300,
         "--model-health-interval must be 0.1..300 seconds"),
        (len([u for u in args.openai_base_url.split(",") if u.strip()]) <= MAX_SERVERS,
         f"--openai-base-url names at most {MAX_SERVERS} servers"),
    )
    for ok, why in checks:
        if not ok:
            raise SystemExit(why)
    return GatewayConfig(args.model_concurrency, args.model_queue, args.model_queue_wait,
                         args.model_short_at, args.model_short_factor,
                         args.model_health_interval)


def load_tiers(path: Path) -> tuple[dict[str, TierLimits], str]:
    """The tiers of a ``--quota-tiers`` file and the default tier's name;
    SystemExit naming the file and the field that is wrong::

        default = "free"
        [tiers.free]
        tokens_per_day = 20000
        tokens_per_month = 200000
        requests_per_day = 100
        requests_per_month = 1000
    """
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(f"--quota-tiers {path}: {exc}") from None
    tiers_doc = doc.get("tiers")
    if not isinstance(tiers_doc, Mapping) or not 0 < len(tiers_doc) <= MAX_TIERS:
        raise SystemExit(f"--quota-tiers {path}: [tiers.<name>] tables, 1..{MAX_TIERS}")
    tiers: dict[str, TierLimits] = {}
    for name, table in tiers_doc.items():
        if not _TIER_NAME.match(name) or not isinstance(table, Mapping):
            raise SystemExit(f"--quota-tiers {path}: tier {name!r}: a name of 1..32 of "
                             "[a-z0-9_-] with a table of limits")
        extra = set(table) - set(_TIER_FIELDS)
        if extra:
            raise SystemExit(f"--quota-tiers {path}: tier {name!r}: unknown {sorted(extra)}")
        values = [table.get(f, 0) for f in _TIER_FIELDS]
        for f, v in zip(_TIER_FIELDS, values, strict=True):
            if type(v) is not int or not 0 <= v <= 10**12:
                raise SystemExit(f"--quota-tiers {path}: tiers.{name}.{f}: an integer "
                                 "0..10^12 (0: unlimited)")
        tiers[name] = TierLimits(*values)
    default = doc.get("default", next(iter(tiers)))
    if default not in tiers:
        raise SystemExit(f"--quota-tiers {path}: default {default!r} is not a tier")
    return tiers, default


def quota_tiers(args: argparse.Namespace) -> tuple[dict[str, TierLimits], str]:
    """The tiers of ``--quota-tiers`` (none without it)."""
    if args.quota_tiers is None:
        return {}, ""
    return load_tiers(args.quota_tiers)
