"""The one flag table of the ``liveroom`` command.

Every flag a process takes is defined here once, with its environment
variable (``LIVEROOM_<NAME>``) and its default, and turned into the options
of the process here once: ``edge_config`` (``EdgeConfig``), ``cdn_config``
(``CdnConfig``), ``serve_options`` (``ServeOptions``) and ``role_options``
(``RoleOptions``), ``agent_options`` (``AgentOptions``: ``serve`` and
``agents``). ``liveroom serve`` and ``liveroom edge`` take the same
limits because they add the same ``LIMITS`` (``tests/unit/test_roles_cli.py``
keeps it so).

Defaults are strings, as the environment gives them: argparse converts them
with the flag's ``type``, so a bad variable is reported like a bad flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdn.origin import CdnConfig
from edge.config import EdgeConfig, HttpTimeouts
from liveroom import agent_flags
from liveroom.gateway_flags import add_gateway_arguments, gateway_config, quota_tiers
from liveroom.options import EventOptions, RoleOptions, ServeOptions
from llm_agents.quota import QuotaLimits
from llm_agents.service import BACKEND_CHOICES, AgentOptions
from room_router.hooks import HookConfig


def env(name: str, default: str) -> str:
    """``LIVEROOM_<name>`` if set, else ``default``."""
    return os.environ.get(f"LIVEROOM_{name}", default)


def urls(text: str) -> list[str]:
    """A comma-separated list of URLs."""
    return [u.strip() for u in text.split(",") if u.strip()]


def _send_loop(text: str) -> str:
    if text not in ("c", "python"):
        raise argparse.ArgumentTypeError(f"expected c or python, not {text!r}")
    return text


def _names(text: str) -> frozenset[str]:
    return frozenset(s.strip() for s in text.split(",") if s.strip())


@dataclass(frozen=True, slots=True)
class Limit:
    """One edge limit: its flag, its variable, the ``EdgeConfig`` field it
    sets (dotted into ``Rate`` and ``Budget``) and how to read it."""

    flag: str
    env: str
    path: str
    kind: Callable[[str], Any]
    help: str | None = None
    # How the default is written (the lossy sections are a set).
    show: Callable[[Any], str] = str

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def default(self) -> str:
        obj: Any = EdgeConfig()
        for part in self.path.split("."):
            obj = getattr(obj, part)
        return self.show(obj)


# The edge limits (see docs/PROTOCOL.md, Limits), in the order --help shows them.
LIMITS: tuple[Limit, ...] = (
    Limit("--max-frame-bytes", "MAX_FRAME_BYTES", "max_frame_bytes", int),
    Limit("--max-value-bytes", "MAX_VALUE_BYTES", "max_value_bytes", int,
          "msgpack size of any one field of a frame or HTTP body"),
    Limit("--error-log-lines", "ERROR_LOG_LINES", "error_log_lines", int,
          "log lines per kind of client-caused failure per interval"),
    Limit("--error-log-interval", "ERROR_LOG_INTERVAL", "error_log_interval", float),
    Limit("--max-rooms", "MAX_ROOMS", "max_rooms_per_conn", int,
          "rooms one connection may join"),
    Limit("--max-conns-per-user", "MAX_CONNS_PER_USER", "max_conns_per_user", int,
          "authenticated connections of one user on this edge; one more is refused at "
          "hello (too_many_connections, close 4004)"),
    Limit("--max-conns-per-agent", "MAX_CONNS_PER_AGENT", "max_conns_per_agent", int),
    Limit("--action-rate", "ACTION_RATE", "action_rate.per_second", float,
          "actions per second per user per room"),
    Limit("--action-burst", "ACTION_BURST", "action_rate.burst", int),
    Limit("--peer-rate", "PEER_RATE", "peer_rate.per_second", float,
          "peer messages per second per user"),
    Limit("--peer-burst", "PEER_BURST", "peer_rate.burst", int),
    Limit("--inbox-max-messages", "INBOX_MAX_MESSAGES", "inbox_max_messages", int,
          "unacknowledged peer messages one user may hold; past it the sender gets "
          "inbox_full"),
    Limit("--inbox-max-bytes", "INBOX_MAX_BYTES", "inbox_max_bytes", int,
          "bytes of unacknowledged peer message bodies (msgpack) one user may hold; past it "
          "the sender gets inbox_full"),
    Limit("--frame-rate", "FRAME_RATE", "frame_rate.per_second", float,
          "client frames per second per connection, of every kind; a join or sync costs one "
          "more per 4 KiB of its reply"),
    Limit("--frame-burst", "FRAME_BURST", "frame_rate.burst", int),
    Limit("--max-sections", "MAX_SECTIONS", "max_sections", int,
          "sections per room; a write that would add one more is refused"),
    Limit("--room-idle-seconds", "ROOM_IDLE_SECONDS", "room_idle_seconds", float,
          "a room with no member and no write for this long is dropped from memory, its "
          "state with it"),
    Limit("--outbound-budget", "OUTBOUND_BUDGET", "budget.bytes", int,
          "unsent bytes per connection: likes are shed from 1/4 of it, comments from 1/2, "
          "gifts from all of it"),
    Limit("--slow-grace", "SLOW_GRACE", "budget.slow_grace", float,
          "seconds over budget, or stalled (shedding and not draining), before the "
          "slow-consumer close"),
    Limit("--hello-timeout", "HELLO_TIMEOUT", "hello_timeout", float),
    Limit("--max-fragments", "MAX_FRAGMENTS", "max_fragments", int,
          "frames one WebSocket message may come in (past it: 1009)"),
    Limit("--max-inbound-bytes", "MAX_INBOUND_BYTES", "max_inbound_bytes", int,
          "bytes of client frames waiting for the node, per connection: a WebSocket stops "
          "reading past it, a WebTransport session is closed (4100)"),
    Limit("--max-wt-sessions", "MAX_WT_SESSIONS", "max_wt_sessions", int,
          "WebTransport sessions per QUIC connection (one more gets 429)"),
    Limit("--online-interval", "ONLINE_INTERVAL", "online_interval", float),
    Limit("--poll-threshold", "POLL_THRESHOLD", "poll_threshold", int,
          "members of a room on this edge from which they take state by polling the CDN "
          "instead of push (0: never)"),
    Limit("--coalesce-window", "COALESCE_WINDOW", "coalesce_window", float,
          "seconds; messages to a busy room within this window go out as one batch frame "
          "per connection (0: off)"),
    Limit("--send-loop", "SEND_LOOP", "send_loop", _send_loop,
          "the fan-out's send loop: c (edge/_sendloop.c, the Python loop where it was not "
          "built) or python"),
    Limit("--lossy-sections", "LOSSY_SECTIONS", "lossy_sections", _names,
          "comma-separated base names of sections whose changes go to QUIC clients as "
          "unreliable datagrams (\"\": none)", show=lambda v: ",".join(sorted(v))),
)


def add_limit_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("limits (see docs/PROTOCOL.md)")
    for lim in LIMITS:
        g.add_argument(lim.flag, type=lim.kind, default=env(lim.env, lim.default()),
                       help=lim.help)
    g.add_argument("--rooms-config", type=Path, default=env("ROOMS_CONFIG", "") or None,
                   help="a TOML file of settings per room pattern (private, presence, "
                        "history, rates, kinds; docs/PROTOCOL.md), reloaded on SIGHUP")
    add_hook_arguments(p)


def add_hook_arguments(p: argparse.ArgumentParser) -> None:
    """The backend hooks (docs/BACKEND.md): ``serve`` and ``edge``. The
    hooks' secret is LIVEROOM_HOOK_SECRET (else LIVEROOM_API_KEY), never a
    flag: a command line is visible to every user of the machine."""
    d = HookConfig()
    g = p.add_argument_group("backend hooks (docs/BACKEND.md)")
    g.add_argument("--backend-url", default=env("BACKEND_URL", "") or None,
                   help="the platform backend's base URL: the hooks POST to "
                        "<url>/liveroom/publish, /liveroom/connect, /liveroom/join")
    g.add_argument("--hook-timeout", type=float, default=env("HOOK_TIMEOUT", str(d.timeout)),
                   help="seconds a hook call may take; then unavailable (retry)")
    g.add_argument("--hook-concurrency", type=int,
                   default=env("HOOK_CONCURRENCY", str(d.concurrency)),
                   help="calls in flight per hook; one more is refused at once (unavailable)")
    g.add_argument("--hook-breaker-threshold", type=int,
                   default=env("HOOK_BREAKER_THRESHOLD", str(d.breaker_threshold)),
                   help="failed calls in a row that open a hook's circuit breaker")
    g.add_argument("--hook-breaker-reset", type=float,
                   default=env("HOOK_BREAKER_RESET", str(d.breaker_reset)),
                   help="seconds a hook's breaker stays open before a probe call")
    g.add_argument("--connect-proxy", action="store_true",
                   default=env("CONNECT_PROXY", "") not in ("", "0", "false"),
                   help="every hello is approved by the backend (needs --backend-url)")


def hook_config(args: argparse.Namespace) -> HookConfig:
    """The hooks of ``args`` (the defaults, hooks off, for a command without them)."""
    if not hasattr(args, "backend_url"):
        return HookConfig()
    if args.connect_proxy and not args.backend_url:
        raise SystemExit("--connect-proxy needs --backend-url")
    if not 0 < args.hook_timeout <= 60 or not 1 <= args.hook_concurrency <= 100_000 \
            or args.hook_breaker_threshold < 1 or args.hook_breaker_reset <= 0:
        raise SystemExit("--hook-timeout is 0..60 s, --hook-concurrency 1..100000, "
                         "--hook-breaker-threshold 1 or more, --hook-breaker-reset > 0")
    return HookConfig(url=args.backend_url, timeout=args.hook_timeout,
                      concurrency=args.hook_concurrency,
                      breaker_threshold=args.hook_breaker_threshold,
                      breaker_reset=args.hook_breaker_reset, connect=args.connect_proxy,
                      secret=os.environ.get("LIVEROOM_HOOK_SECRET") or None)


def add_cdn_arguments(p: argparse.ArgumentParser) -> None:
    """How long shared caches keep a room's head: the polling origin's flags
    (``serve``, ``edge``, ``cdn``)."""
    d = CdnConfig()
    g = p.add_argument_group("polling clients (CDN origin)")
    g.add_argument("--head-max-age", type=int, default=env("HEAD_MAX_AGE", str(d.head_max_age)),
                   help="seconds a shared cache may keep a room's head")
    g.add_argument("--head-stale-while-revalidate", type=int,
                   default=env("HEAD_SWR", str(d.head_stale_while_revalidate)),
                   help="seconds a cache may serve a stale head while it revalidates")


def add_http_arguments(p: argparse.ArgumentParser) -> None:
    """The HTTP timeouts of every role that serves HTTP (``liveroom serve``,
    ``edge``, ``router``, ``cdn``, ``agents``; see docs/PROTOCOL.md, Limits)."""
    d = HttpTimeouts()
    g = p.add_argument_group("HTTP connections (every request, every role)")
    g.add_argument("--http-head-timeout", type=float,
                   default=env("HTTP_HEAD_TIMEOUT", str(d.head)),
                   help="seconds from a request head's first byte (a new connection's "
                        "accept) to its end; else the connection is closed")
    g.add_argument("--http-body-timeout", type=float,
                   default=env("HTTP_BODY_TIMEOUT", str(d.body)),
                   help="seconds from the end of a request head to the end of its body; "
                        "else the connection is closed")
    g.add_argument("--http-idle-timeout", type=float,
                   default=env("HTTP_IDLE_TIMEOUT", str(d.idle)),
                   help="seconds a keep-alive connection may wait for its next request")


def add_quic_arguments(p: argparse.ArgumentParser, default_port: str = "auto") -> None:
    """The QUIC (WebTransport) flags of ``liveroom serve`` and ``liveroom edge``."""
    quic = p.add_argument_group("QUIC (WebTransport over HTTP/3 on /wt)")
    quic.add_argument("--quic-port", default=env("QUIC_PORT", default_port),
                      help="UDP port; 'auto': the TCP port + 1 when a certificate is at hand "
                           "(--quic-cert/--quic-key, or --dev, which makes one), 'off': no QUIC")
    quic.add_argument("--quic-cert", type=Path, default=env("QUIC_CERT", "") or None,
                      help="PEM certificate (chain) for QUIC")
    quic.add_argument("--quic-key", type=Path, default=env("QUIC_KEY", "") or None,
                      help="PEM private key for QUIC")
    quic.add_argument("--quic-idle-timeout", type=float, default=env("QUIC_IDLE_TIMEOUT", "30"),
                      help="seconds without a packet from a client before its QUIC connection "
                           "is dropped; the edge PINGs every third of it")


def add_service_arguments(p: argparse.ArgumentParser) -> None:
    """``--nats``, ``--redis``, ``--postgres``, ``--subject-prefix``: every role's."""
    g = p.add_argument_group("services (see docs/DEPLOY.md)")
    g.add_argument("--nats", type=urls, default=urls(env("NATS", "")),
                   help="NATS cluster URLs, comma-separated (nats://h1:4222,nats://h2:4222)")
    g.add_argument("--redis", default=env("REDIS", "") or None,
                   help="redis://host:port/0, or a Redis Cluster node (redis://h:7000)")
    g.add_argument("--postgres", default=env("POSTGRES", "") or None,
                   help="postgresql://user:pass@host/db")
    g.add_argument("--subject-prefix", default=env("SUBJECT_PREFIX", "liveroom"),
                   help="NATS subject namespace of this deployment")


def add_event_arguments(p: argparse.ArgumentParser, *, webhook: bool, jetstream: bool) -> None:
    """Events to the backend (docs/BACKEND.md, "Events"): the webhook flags
    (``serve``: with the outbox's bound; ``webhooks``) and the JetStream
    ones (``edge``: with ``--events``; ``webhooks``)."""
    d = EventOptions()
    g = p.add_argument_group("events to the backend (docs/BACKEND.md)")
    if webhook:
        g.add_argument("--webhook-url", default=env("WEBHOOK_URL", "") or None,
                       help="POST batches of events here, signed with LIVEROOM_WEBHOOK_SECRET")
        g.add_argument("--webhook-batch", type=int,
                       default=env("WEBHOOK_BATCH", str(d.batch_events)),
                       help="events per webhook POST (1..1000)")
        g.add_argument("--webhook-batch-bytes", type=int,
                       default=env("WEBHOOK_BATCH_BYTES", str(d.batch_bytes)),
                       help="bytes of events per webhook POST (an event bigger goes alone)")
        g.add_argument("--webhook-timeout", type=float,
                       default=env("WEBHOOK_TIMEOUT", str(d.timeout)),
                       help="seconds for one POST; then it is retried")
    if webhook and jetstream:
        g.add_argument("--webhook-ack-wait", type=float,
                       default=env("WEBHOOK_ACK_WAIT", str(d.ack_wait)),
                       help="seconds before a batch a dead dispatcher held is sent again")
    if webhook and not jetstream:
        g.add_argument("--outbox-max-events", type=int,
                       default=env("OUTBOX_MAX_EVENTS", str(d.outbox_max_events)),
                       help="undelivered events the outbox keeps; past it new events are "
                            "dropped (counted)")
    if not jetstream:
        return
    if not webhook:
        g.add_argument("--events", action="store_true",
                       default=env("EVENTS", "") not in ("", "0", "false"),
                       help="publish events to the JetStream stream (needs --nats)")
        g.add_argument("--events-buffer", type=int, default=env("EVENTS_BUFFER", str(d.buffer)),
                       help="events this edge holds while JetStream is unreachable; past it "
                            "new ones are dropped (counted)")
    g.add_argument("--events-stream", default=env("EVENTS_STREAM", d.stream))
    g.add_argument("--events-max-age", type=float,
                   default=env("EVENTS_MAX_AGE", str(d.stream_max_age)),
                   help="seconds the stream keeps an event")
    g.add_argument("--events-max-bytes", type=int,
                   default=env("EVENTS_MAX_BYTES", str(d.stream_max_bytes)))
    g.add_argument("--events-replicas", type=int,
                   default=env("EVENTS_REPLICAS", str(d.stream_replicas)),
                   help="JetStream servers keeping a copy of the stream (1, or 3 in a cluster)")


def event_options(args: argparse.Namespace) -> EventOptions:
    """``EventOptions`` of ``args``; bounds checked (a usage error, not a traceback)."""
    d = EventOptions()
    if not hasattr(args, "webhook_url"):
        return dataclasses.replace(d, **{f: getattr(args, a) for f, a in (
            ("jetstream", "events"), ("buffer", "events_buffer"), ("stream", "events_stream"),
            ("stream_max_age", "events_max_age"), ("stream_max_bytes", "events_max_bytes"),
            ("stream_replicas", "events_replicas")) if hasattr(args, a)})
    if getattr(args, "webhook_ack_wait", 1.0) <= 0:
        raise SystemExit("--webhook-ack-wait must be more than 0")
    if not 1 <= args.webhook_batch <= 1000:
        raise SystemExit("--webhook-batch must be 1..1000")
    if not 1024 <= args.webhook_batch_bytes <= 16 * 1024 * 1024:
        raise SystemExit("--webhook-batch-bytes must be 1 KiB..16 MiB")
    secret = os.environ.get("LIVEROOM_WEBHOOK_SECRET", "")
    if args.webhook_url and len(secret) < 16:
        raise SystemExit("--webhook-url needs LIVEROOM_WEBHOOK_SECRET (16 characters or more)")
    return EventOptions(
        webhook_url=args.webhook_url, webhook_secret=secret, batch_events=args.webhook_batch,
        batch_bytes=args.webhook_batch_bytes, timeout=args.webhook_timeout,
        outbox_max_events=getattr(args, "outbox_max_events", d.outbox_max_events),
        jetstream=getattr(args, "events", False),
        stream=getattr(args, "events_stream", d.stream),
        buffer=getattr(args, "events_buffer", d.buffer),
        stream_max_age=getattr(args, "events_max_age", d.stream_max_age),
        stream_max_bytes=getattr(args, "events_max_bytes", d.stream_max_bytes),
        stream_replicas=getattr(args, "events_replicas", d.stream_replicas),
        ack_wait=getattr(args, "webhook_ack_wait", d.ack_wait))


def add_node_arguments(p: argparse.ArgumentParser, role: str, port: int) -> None:
    """Where a role listens and how it shows in the node registry."""
    p.add_argument("--host", default=env("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=env("PORT", str(port)),
                   help="TCP port; 0 picks a free one (logged at start)")
    p.add_argument("--node-id", default=env("NODE_ID", f"{role}-{secrets.token_hex(4)}"))
    p.add_argument("--group", default=env("GROUP", "g0"),
                   help="placement group: rooms hash over groups (e.g. one per machine)")
    p.add_argument("--public-url", default=env("PUBLIC_URL", "") or None,
                   help="the WebSocket URL clients are sent to (default ws://HOST:PORT/ws)")
    add_cluster_arguments(p)
    p.add_argument("--data-dir", type=Path, default=env("DATA_DIR", "data"))
    p.add_argument("--dev", action="store_true",
                   help="POST /v1/dev/token mints tokens (LIVEROOM_JWT_SECRET still required)")
    p.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))


def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    """The heartbeat and the big-room threshold (every role, and ``cluster``)."""
    p.add_argument("--heartbeat", type=float, default=env("HEARTBEAT", "2.0"),
                   help="seconds between heartbeats; a node expires after 3 missed")
    p.add_argument("--big-threshold", type=int, default=env("BIG_THRESHOLD", "5000"),
                   help="members (summed over edges) from which a room spreads over "
                        "every group (0: only rooms a host flags)")


def http_timeouts(args: argparse.Namespace) -> HttpTimeouts:
    return HttpTimeouts(head=args.http_head_timeout, body=args.http_body_timeout,
                        idle=args.http_idle_timeout)


def _set(obj: Any, path: list[str], value: Any) -> Any:
    """``obj`` (a frozen dataclass) with the field at ``path`` replaced."""
    head, *rest = path
    inner = _set(getattr(obj, head), rest, value) if rest else value
    return dataclasses.replace(obj, **{head: inner})


def edge_config(args: argparse.Namespace) -> EdgeConfig:
    """The ``EdgeConfig`` of ``args``: every limit of ``LIMITS``, the HTTP
    timeouts, and the poll interval the head's cache lifetime implies. A
    command without the limits (``router``, ``cdn``) gets the defaults."""
    config = EdgeConfig(http=http_timeouts(args))
    if not hasattr(args, LIMITS[0].dest):
        return config
    for lim in LIMITS:
        config = _set(config, lim.path.split("."), getattr(args, lim.dest))
    return dataclasses.replace(config, poll_interval=float(args.head_max_age))


def cdn_config(args: argparse.Namespace) -> CdnConfig:
    if not hasattr(args, "head_max_age"):
        return CdnConfig()
    return CdnConfig(head_max_age=args.head_max_age,
                     head_stale_while_revalidate=args.head_stale_while_revalidate)


def serve_options(args: argparse.Namespace) -> ServeOptions:
    return ServeOptions(
        host=args.host, port=args.port, dev=args.dev, data_dir=args.data_dir,
        demo_room=not args.no_demo_room, config=edge_config(args), cdn=cdn_config(args),
        quic_port=args.quic_port, quic_cert=args.quic_cert, quic_key=args.quic_key,
        quic_idle_timeout=args.quic_idle_timeout, agents=agent_options(args),
        rooms_config=args.rooms_config, hooks=hook_config(args),
        events=event_options(args),
        jwt_secret=os.environ.get("LIVEROOM_JWT_SECRET"),
        api_key=os.environ.get("LIVEROOM_API_KEY"))


def role_options(args: argparse.Namespace, role: str) -> RoleOptions:
    quic = role == "edge"
    return RoleOptions(
        role=role, host=args.host, port=args.port, node_id=args.node_id, group=args.group,
        public_url=args.public_url, nats=args.nats, redis=args.redis, postgres=args.postgres,
        subject_prefix=args.subject_prefix, heartbeat=args.heartbeat,
        big_threshold=args.big_threshold, dev=args.dev, data_dir=args.data_dir,
        config=edge_config(args), cdn=cdn_config(args),
        quic_port=args.quic_port if quic else "off",
        quic_cert=args.quic_cert if quic else None, quic_key=args.quic_key if quic else None,
        quic_idle_timeout=args.quic_idle_timeout if quic else 30.0,
        rooms_config=getattr(args, "rooms_config", None), hooks=hook_config(args),
        events=event_options(args),
        jwt_secret=os.environ.get("LIVEROOM_JWT_SECRET"),
        api_key=os.environ.get("LIVEROOM_API_KEY"))


# -- the agents' flags (liveroom serve and liveroom agents; docs/AGENTS.md) --
def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    # Defaults come from AgentOptions, as the limits come from EdgeConfig: one
    # source of truth; strings, so a bad variable is reported like a bad flag.
    d = AgentOptions()
    g = parser.add_argument_group("agents (LLM characters; docs/AGENTS.md)")
    g.add_argument("--no-agents", action="store_true",
                   help="start no agent (default: the demo character in the demo room)")
    g.add_argument("--agent-room", default=env("AGENT_ROOM", d.room))
    g.add_argument("--agent-characters", default=env("AGENT_CHARACTERS", ",".join(d.characters)),
                   help="comma-separated character names to seat in --agent-room")
    g.add_argument("--characters", type=Path, default=env("CHARACTERS", "") or None,
                   help="a directory of extra character TOML files")
    g.add_argument("--agent-backend", choices=BACKEND_CHOICES,
                   default=env("AGENT_BACKEND", d.backend),
                   help="auto: embedded when installed (make llm), else scripted")
    g.add_argument("--openai-base-url", default=env("OPENAI_BASE_URL", d.openai_base_url))
    g.add_argument("--openai-model", default=env("OPENAI_MODEL", d.openai_model))
    g.add_argument("--openai-timeout", type=float,
                   default=env("OPENAI_TIMEOUT", str(d.openai_timeout)))
    g.add_argument("--openai-idle-timeout", type=float,
                   default=env("OPENAI_IDLE_TIMEOUT", str(d.openai_idle_timeout)),
                   help="seconds without a chunk before a call counts as failed")
    g.add_argument("--openai-retries", type=int,
                   default=env("OPENAI_RETRIES", str(d.openai_retries)))
    g.add_argument("--breaker-threshold", type=int,
                   default=env("BREAKER_THRESHOLD", str(d.breaker_threshold)))
    g.add_argument("--breaker-reset", type=float,
                   default=env("BREAKER_RESET", str(d.breaker_reset)),
                   help="seconds the breaker stays open before a probe call")
    g.add_argument("--quota-room-per-day", type=int,
                   default=env("QUOTA_ROOM_PER_DAY", str(d.quota.room_per_day)),
                   help="tokens a day per room (0: unlimited)")
    g.add_argument("--quota-user-per-day", type=int,
                   default=env("QUOTA_USER_PER_DAY", str(d.quota.user_per_day)),
                   help="tokens a day per user (0: unlimited)")
    g.add_argument("--quota-redis", default=env("QUOTA_REDIS", "") or None,
                   help="redis://host:port/db (or redis+cluster://): keep the quotas in Redis "
                        "(several agents processes; liveroom agents --redis does it too); "
                        "default: in this process's memory")
    g.add_argument("--agent-word-delay", type=float,
                   default=env("AGENT_WORD_DELAY", str(d.word_delay)),
                   help="seconds between the words of a scripted reply")
    g.add_argument("--agent-stale-after", type=float,
                   default=env("AGENT_STALE_AFTER", str(d.stale_after)),
                   help="seconds after which an unanswered trigger (or a reply in flight) "
                        "is stale and dropped")
    g.add_argument("--agent-big-room", type=int,
                   default=env("AGENT_BIG_ROOM", str(d.big_room_members)),
                   help="members from which a room is big: a reply's deltas then go out every "
                        "--agent-big-room-delta-interval seconds (each is a message to every "
                        "member)")
    g.add_argument("--agent-big-room-delta-interval", type=float,
                   default=env("AGENT_BIG_ROOM_DELTA_INTERVAL",
                               str(d.big_room_delta_interval)))
    g.add_argument("--embedded-threads", type=int,
                   default=env("EMBEDDED_THREADS", str(d.embedded_threads)),
                   help="CPU threads of the embedded model")
    g.add_argument("--interaction-retention-days", type=float,
                   default=env("INTERACTION_RETENTION_DAYS", str(d.interaction_retention_days)),
                   help="days a finished direct interaction (and its stream) is kept; "
                        "0: forever")
    g.add_argument("--agent-cooldown", type=float, default=None,
                   help="override every character's cooldown_s (seconds)")
    agent_flags.add_memory_arguments(g)
    agent_flags.add_seat_arguments(g)
    add_gateway_arguments(parser)


def agent_options(args: argparse.Namespace) -> AgentOptions:
    if args.interaction_retention_days < 0:
        raise SystemExit("--interaction-retention-days must be 0 (forever) or more")
    return AgentOptions(
        enabled=not args.no_agents, room=args.agent_room,
        characters=tuple(urls(args.agent_characters)),
        characters_dir=args.characters, backend=args.agent_backend,
        openai_base_url=args.openai_base_url, openai_model=args.openai_model,
        openai_api_key=os.environ.get("LIVEROOM_OPENAI_API_KEY", "not-needed"),
        openai_timeout=args.openai_timeout, openai_idle_timeout=args.openai_idle_timeout,
        openai_retries=args.openai_retries, breaker_threshold=args.breaker_threshold,
        breaker_reset=args.breaker_reset,
        quota=QuotaLimits(args.quota_room_per_day, args.quota_user_per_day,
                          *quota_tiers(args)),
        word_delay=args.agent_word_delay, stale_after=args.agent_stale_after,
        cooldown=args.agent_cooldown, embedded_threads=args.embedded_threads,
        quota_redis=args.quota_redis, big_room_members=args.agent_big_room,
        big_room_delta_interval=args.agent_big_room_delta_interval,
        interaction_retention_days=args.interaction_retention_days,
        memory=agent_flags.memory_limits(args), seat_limits=agent_flags.seat_limits(args),
        gateway=gateway_config(args))
