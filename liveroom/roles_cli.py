"""The distributed roles on the ``liveroom`` command: ``edge``, ``router``,
``cdn`` and ``cluster`` (a local multi-process cluster). The ``agents`` role
is composed in ``liveroom.agents_cli``.

Each role takes ``--nats`` (comma-separated URLs of the NATS cluster),
``--redis`` and ``--postgres`` (or ``LIVEROOM_NATS``, ``LIVEROOM_REDIS``,
``LIVEROOM_POSTGRES``), a node id, a group and a public URL. See
docs/DEPLOY.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cdn.origin import CdnConfig
from edge.config import EdgeConfig, HttpTimeouts
from edge.fanout import Budget
from liveroom.distributed import RoleOptions, RoleProcess, describe
from room_router.ratelimit import Rate

log = logging.getLogger("liveroom")

ROLE_COMMANDS = ("edge", "router", "cdn", "cluster")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"LIVEROOM_{name}", default)


def _urls(text: str) -> list[str]:
    return [u.strip() for u in text.split(",") if u.strip()]


def add_service_arguments(p: argparse.ArgumentParser) -> None:
    """``--nats``, ``--redis``, ``--postgres``, ``--subject-prefix``: every role's."""
    g = p.add_argument_group("services (see docs/DEPLOY.md)")
    g.add_argument("--nats", type=_urls, default=_urls(_env("NATS", "")),
                   help="NATS cluster URLs, comma-separated (nats://h1:4222,nats://h2:4222)")
    g.add_argument("--redis", default=_env("REDIS", "") or None,
                   help="redis://host:port/0, or a Redis Cluster node (redis://h:7000)")
    g.add_argument("--postgres", default=_env("POSTGRES", "") or None,
                   help="postgresql://user:pass@host/db")
    g.add_argument("--subject-prefix", default=_env("SUBJECT_PREFIX", "liveroom"),
                   help="NATS subject namespace of this deployment")


def _node(p: argparse.ArgumentParser, role: str, port: int) -> None:
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(_env("PORT", str(port))),
                   help="TCP port; 0 picks a free one (logged at start)")
    p.add_argument("--node-id", default=_env("NODE_ID", f"{role}-{secrets.token_hex(4)}"))
    p.add_argument("--group", default=_env("GROUP", "g0"),
                   help="placement group: rooms hash over groups (e.g. one per machine)")
    p.add_argument("--public-url", default=_env("PUBLIC_URL", "") or None,
                   help="the WebSocket URL clients are sent to (default ws://HOST:PORT/ws)")
    p.add_argument("--heartbeat", type=float, default=float(_env("HEARTBEAT", "2.0")),
                   help="seconds between heartbeats; a node expires after 3 missed")
    p.add_argument("--big-threshold", type=int, default=int(_env("BIG_THRESHOLD", "5000")),
                   help="members (summed over edges) from which a room spreads over "
                        "every group (0: only rooms a host flags)")
    p.add_argument("--data-dir", type=Path, default=Path(_env("DATA_DIR", "data")))
    p.add_argument("--dev", action="store_true",
                   help="POST /v1/dev/token mints tokens (LIVEROOM_JWT_SECRET still required)")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))


# The edge limits, as `liveroom serve` takes them (same flags, same variables).
_LIMITS: tuple[tuple[str, str, type, str], ...] = (
    ("--max-frame-bytes", "MAX_FRAME_BYTES", int, "max_frame_bytes"),
    ("--max-value-bytes", "MAX_VALUE_BYTES", int, "max_value_bytes"),
    ("--error-log-lines", "ERROR_LOG_LINES", int, "error_log_lines"),
    ("--error-log-interval", "ERROR_LOG_INTERVAL", float, "error_log_interval"),
    ("--max-rooms", "MAX_ROOMS", int, "max_rooms_per_conn"),
    ("--max-conns-per-user", "MAX_CONNS_PER_USER", int, "max_conns_per_user"),
    ("--action-rate", "ACTION_RATE", float, "action_rate.per_second"),
    ("--action-burst", "ACTION_BURST", int, "action_rate.burst"),
    ("--peer-rate", "PEER_RATE", float, "peer_rate.per_second"),
    ("--peer-burst", "PEER_BURST", int, "peer_rate.burst"),
    ("--inbox-max-messages", "INBOX_MAX_MESSAGES", int, "inbox_max_messages"),
    ("--inbox-max-bytes", "INBOX_MAX_BYTES", int, "inbox_max_bytes"),
    ("--frame-rate", "FRAME_RATE", float, "frame_rate.per_second"),
    ("--frame-burst", "FRAME_BURST", int, "frame_rate.burst"),
    ("--max-sections", "MAX_SECTIONS", int, "max_sections"),
    ("--room-idle-seconds", "ROOM_IDLE_SECONDS", float, "room_idle_seconds"),
    ("--outbound-budget", "OUTBOUND_BUDGET", int, "budget.bytes"),
    ("--slow-grace", "SLOW_GRACE", float, "budget.slow_grace"),
    ("--hello-timeout", "HELLO_TIMEOUT", float, "hello_timeout"),
    ("--online-interval", "ONLINE_INTERVAL", float, "online_interval"),
    ("--poll-threshold", "POLL_THRESHOLD", int, "poll_threshold"),
    ("--coalesce-window", "COALESCE_WINDOW", float, "coalesce_window"),
    ("--max-fragments", "MAX_FRAGMENTS", int, "max_fragments"),
    ("--max-inbound-bytes", "MAX_INBOUND_BYTES", int, "max_inbound_bytes"),
    ("--max-wt-sessions", "MAX_WT_SESSIONS", int, "max_wt_sessions"),
)


def _default(path: str) -> Any:
    obj: Any = EdgeConfig()
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _limits(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("limits (as liveroom serve; see docs/PROTOCOL.md)")
    for flag, env, kind, path in _LIMITS:
        g.add_argument(flag, type=kind, default=kind(_env(env, str(_default(path)))))


def add_http_arguments(p: argparse.ArgumentParser) -> None:
    """The HTTP timeouts of every role that serves HTTP (``liveroom serve``,
    ``edge``, ``router``, ``cdn``, ``agents``; see docs/PROTOCOL.md, Limits)."""
    d = HttpTimeouts()
    g = p.add_argument_group("HTTP connections (every request, every role)")
    g.add_argument("--http-head-timeout", type=float,
                   default=float(_env("HTTP_HEAD_TIMEOUT", str(d.head))),
                   help="seconds from a request head's first byte (a new connection's "
                        "accept) to its end; else the connection is closed")
    g.add_argument("--http-body-timeout", type=float,
                   default=float(_env("HTTP_BODY_TIMEOUT", str(d.body))),
                   help="seconds from the end of a request head to the end of its body; "
                        "else the connection is closed")
    g.add_argument("--http-idle-timeout", type=float,
                   default=float(_env("HTTP_IDLE_TIMEOUT", str(d.idle))),
                   help="seconds a keep-alive connection may wait for its next request")


def http_timeouts(args: argparse.Namespace) -> HttpTimeouts:
    return HttpTimeouts(head=args.http_head_timeout, body=args.http_body_timeout,
                        idle=args.http_idle_timeout)


def _config(args: argparse.Namespace) -> EdgeConfig:
    d = EdgeConfig()
    return EdgeConfig(
        max_frame_bytes=args.max_frame_bytes, max_rooms_per_conn=args.max_rooms,
        max_conns_per_user=args.max_conns_per_user,
        max_value_bytes=args.max_value_bytes, error_log_lines=args.error_log_lines,
        error_log_interval=args.error_log_interval,
        action_rate=Rate(args.action_rate, args.action_burst),
        peer_rate=Rate(args.peer_rate, args.peer_burst),
        inbox_max_messages=args.inbox_max_messages, inbox_max_bytes=args.inbox_max_bytes,
        frame_rate=Rate(args.frame_rate, args.frame_burst),
        max_sections=args.max_sections, room_idle_seconds=args.room_idle_seconds,
        budget=Budget(bytes=args.outbound_budget, slow_grace=args.slow_grace,
                      hard_factor=d.budget.hard_factor),
        hello_timeout=args.hello_timeout, online_interval=args.online_interval,
        coalesce_window=args.coalesce_window, poll_threshold=args.poll_threshold,
        max_fragments=args.max_fragments, max_inbound_bytes=args.max_inbound_bytes,
        max_wt_sessions=args.max_wt_sessions, http=http_timeouts(args))


def add_role_parsers(sub: Any) -> None:
    """Add the role sub-commands to the ``liveroom`` parser."""
    edge = sub.add_parser("edge", help="an edge node: client WebSockets, placement, bus")
    _node(edge, "edge", 8080)
    add_service_arguments(edge)
    _limits(edge)
    add_http_arguments(edge)
    # Off unless asked for: the edges of one machine (liveroom cluster) would
    # otherwise share --dev's certificate directory.
    add_quic_arguments(edge, default_port="off")
    router = sub.add_parser("router", help="answers GET /v1/route from the node registry")
    _node(router, "router", 8070)
    add_service_arguments(router)
    add_http_arguments(router)
    cdn = sub.add_parser("cdn", help="the polling origin (head, versioned sections) over "
                         "the shared state store")
    _node(cdn, "cdn", 8090)
    add_service_arguments(cdn)
    add_http_arguments(cdn)
    cluster = sub.add_parser("cluster", help="a local multi-process cluster: N edges and a "
                             "router against the given services")
    cluster.add_argument("--edges", type=int, default=3)
    cluster.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    cluster.add_argument("--port", type=int, default=int(_env("PORT", "8070")),
                         help="the router's port (edges take free ports)")
    cluster.add_argument("--heartbeat", type=float, default=float(_env("HEARTBEAT", "2.0")))
    cluster.add_argument("--big-threshold", type=int,
                         default=int(_env("BIG_THRESHOLD", "5000")))
    cluster.add_argument("--data-dir", type=Path, default=Path(_env("DATA_DIR", "data")))
    cluster.add_argument("--dev", action="store_true")
    cluster.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    add_service_arguments(cluster)



def add_quic_arguments(parser: argparse.ArgumentParser, default_port: str = "auto") -> None:
    """The QUIC (WebTransport) flags of ``liveroom serve`` and ``liveroom edge``."""
    quic = parser.add_argument_group("QUIC (WebTransport over HTTP/3 on /wt)")
    quic.add_argument("--quic-port", default=_env("QUIC_PORT", default_port),
                      help="UDP port; 'auto': the TCP port + 1 when a certificate is at hand "
                           "(--quic-cert/--quic-key, or --dev, which makes one), 'off': no QUIC")
    quic.add_argument("--quic-cert", type=Path,
                      default=os.environ.get("LIVEROOM_QUIC_CERT") or None,
                      help="PEM certificate (chain) for QUIC")
    quic.add_argument("--quic-key", type=Path,
                      default=os.environ.get("LIVEROOM_QUIC_KEY") or None,
                      help="PEM private key for QUIC")
    quic.add_argument("--quic-idle-timeout", type=float,
                      default=_env("QUIC_IDLE_TIMEOUT", "30"),
                      help="seconds without a packet from a client before its QUIC connection "
                           "is dropped; the edge PINGs every third of it")


def _options(args: argparse.Namespace, role: str) -> RoleOptions:
    return RoleOptions(
        role=role, host=args.host, port=args.port, node_id=args.node_id, group=args.group,
        public_url=args.public_url, nats=args.nats, redis=args.redis, postgres=args.postgres,
        subject_prefix=args.subject_prefix, heartbeat=args.heartbeat,
        big_threshold=args.big_threshold, dev=args.dev, data_dir=args.data_dir,
        jwt_secret=os.environ.get("LIVEROOM_JWT_SECRET"),
        api_key=os.environ.get("LIVEROOM_API_KEY"),
        config=_config(args) if role == "edge" else EdgeConfig(http=http_timeouts(args)),
        quic_port=args.quic_port if role == "edge" else "off",
        quic_cert=getattr(args, "quic_cert", None), quic_key=getattr(args, "quic_key", None),
        quic_idle_timeout=getattr(args, "quic_idle_timeout", 30.0),
        cdn=CdnConfig())


async def _run(opts: RoleOptions) -> None:
    proc = await RoleProcess(opts).start()
    # The line tests and scripts wait for (same shape as liveroom serve's).
    log.info("listening on %s (%s)", proc.url, json.dumps(describe(proc)))
    await until_stopped()
    await proc.stop()


async def until_stopped() -> None:
    """Wait for SIGINT or SIGTERM: how every long-running command ends."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")


def run_role_command(args: argparse.Namespace) -> int:
    if args.command == "cluster":
        return run_cluster(args)
    try:
        # uvloop when installed, as for liveroom serve: a faster loop, same semantics.
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        log.info("event loop: uvloop")
    except ImportError:
        log.info("event loop: asyncio")
    asyncio.run(_run(_options(args, args.command)))
    return 0


_LISTENING = re.compile(r"listening on (http://[\d.]+:\d+) \((.*)\)$")


def run_cluster(args: argparse.Namespace) -> int:
    """Start ``--edges`` edge processes (groups g0..gN-1) and a router as
    children of this one; stop them all on SIGINT/SIGTERM."""
    missing = [name for name in ("nats", "redis", "postgres") if not getattr(args, name)]
    if missing:
        # Separate processes share nothing else: without these each edge
        # would see only itself.
        raise SystemExit("liveroom cluster needs " + ", ".join(f"--{m}" for m in missing)
                         + " (see docs/DEPLOY.md)")
    env = dict(os.environ)
    if not env.get("LIVEROOM_JWT_SECRET"):
        if not args.dev:
            raise SystemExit("LIVEROOM_JWT_SECRET is required (or run with --dev)")
        env["LIVEROOM_JWT_SECRET"] = secrets.token_urlsafe(32)
        log.warning("dev mode: a JWT secret for this cluster was generated")
    env["PYTHONUNBUFFERED"] = "1"
    common = ["--heartbeat", str(args.heartbeat), "--big-threshold", str(args.big_threshold),
              "--subject-prefix", args.subject_prefix, "--log-level", args.log_level]
    if args.nats:
        common += ["--nats", ",".join(args.nats)]
    if args.redis:
        common += ["--redis", args.redis]
    if args.postgres:
        common += ["--postgres", args.postgres]
    if args.dev:
        common.append("--dev")
    cmds = [[sys.executable, "-m", "liveroom.cli", "router", "--host", args.host,
             "--port", str(args.port), "--node-id", "router-0",
             "--data-dir", str(args.data_dir / "router-0"), *common]]
    for i in range(args.edges):
        cmds.append([sys.executable, "-m", "liveroom.cli", "edge", "--host", args.host,
                     "--port", "0", "--node-id", f"edge-{i}", "--group", f"g{i}",
                     "--data-dir", str(args.data_dir / f"edge-{i}"), *common])
    children: list[subprocess.Popen[str]] = []
    ready = threading.Semaphore(0)

    def relay(proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            if _LISTENING.search(line.rstrip()):
                ready.release()

    try:
        for cmd in cmds:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            children.append(proc)
            threading.Thread(target=relay, args=(proc,), daemon=True).start()
        deadline = time.monotonic() + 30
        for _ in cmds:
            if not ready.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise SystemExit("a cluster process did not start in 30 s")
        log.info("cluster ready: router on http://%s:%d, %d edges (GET /v1/route?room=...)",
                 args.host, args.port, args.edges)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.is_set():
            if any(c.poll() is not None for c in children):
                log.error("a cluster process exited; stopping the cluster")
                return 1
            stop.wait(0.5)
        return 0
    finally:
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        for c in children:
            try:
                c.wait(10)
            except subprocess.TimeoutExpired:
                c.kill()
