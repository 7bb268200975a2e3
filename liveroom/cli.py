"""The ``liveroom`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from aiohttp import web

from cdn.origin import CdnConfig
from edge.config import EdgeConfig
from edge.fanout import Budget
from edge.ws_conn import EdgeSite
from liveroom.agent_flags import add_agent_arguments, agent_options
from liveroom.agents_cli import add_agents_parser, run_agents
from liveroom.app import ServeOptions, make_app, start_quic_edge
from liveroom.roles_cli import (
    ROLE_COMMANDS,
    add_http_arguments,
    add_quic_arguments,
    add_role_parsers,
    http_timeouts,
    run_role_command,
    until_stopped,
)
from plumbing.ratelog import limit_client_driven_logs
from room_router.ratelimit import Rate

log = logging.getLogger("liveroom")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"LIVEROOM_{name}", default)


def _install_uvloop() -> str:
    """uvloop when installed: a faster loop, same semantics."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="liveroom", description="The interactive half of a "
                                "live-streaming platform.")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run every role in one process on embedded defaults")
    serve.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=_env("PORT", "8080"),
                       help="TCP port; 0 picks a free one (logged at start)")
    serve.add_argument("--dev", action="store_true",
                       help="development mode: POST /v1/dev/token mints tokens; a JWT secret "
                            "(kept in the data dir) and an API key are made when not set")
    serve.add_argument("--data-dir", type=Path, default=Path(_env("DATA_DIR", "data")),
                       help="where the durable files live (the peer inbox)")
    serve.add_argument("--no-demo-room", action="store_true",
                       help="do not seed the 'demo' room's state")
    serve.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    d = EdgeConfig()
    lim = serve.add_argument_group("limits (see docs/PROTOCOL.md)")
    lim.add_argument("--max-frame-bytes", type=int,
                     default=_env("MAX_FRAME_BYTES", str(d.max_frame_bytes)))
    lim.add_argument("--max-value-bytes", type=int,
                     default=_env("MAX_VALUE_BYTES", str(d.max_value_bytes)),
                     help="msgpack size of any one field of a frame or HTTP body")
    lim.add_argument("--error-log-lines", type=int,
                     default=_env("ERROR_LOG_LINES", str(d.error_log_lines)),
                     help="log lines per kind of client-caused failure per interval")
    lim.add_argument("--error-log-interval", type=float,
                     default=_env("ERROR_LOG_INTERVAL", str(d.error_log_interval)))
    lim.add_argument("--max-rooms", type=int,
                     default=_env("MAX_ROOMS", str(d.max_rooms_per_conn)),
                     help="rooms one connection may join")
    lim.add_argument("--max-conns-per-user", type=int,
                     default=_env("MAX_CONNS_PER_USER", str(d.max_conns_per_user)),
                     help="authenticated connections of one user on this edge; one more is "
                          "refused at hello (too_many_connections, close 4004)")
    lim.add_argument("--action-rate", type=float,
                     default=_env("ACTION_RATE", str(d.action_rate.per_second)),
                     help="actions per second per user per room")
    lim.add_argument("--action-burst", type=int,
                     default=_env("ACTION_BURST", str(d.action_rate.burst)))
    lim.add_argument("--peer-rate", type=float,
                     default=_env("PEER_RATE", str(d.peer_rate.per_second)),
                     help="peer messages per second per user")
    lim.add_argument("--peer-burst", type=int,
                     default=_env("PEER_BURST", str(d.peer_rate.burst)))
    lim.add_argument("--inbox-max-messages", type=int,
                     default=_env("INBOX_MAX_MESSAGES", str(d.inbox_max_messages)),
                     help="unacknowledged peer messages one user may hold; past it the "
                          "sender gets inbox_full")
    lim.add_argument("--inbox-max-bytes", type=int,
                     default=_env("INBOX_MAX_BYTES", str(d.inbox_max_bytes)),
                     help="bytes of unacknowledged peer message bodies (msgpack) one user "
                          "may hold; past it the sender gets inbox_full")
    lim.add_argument("--frame-rate", type=float,
                     default=_env("FRAME_RATE", str(d.frame_rate.per_second)),
                     help="client frames per second per connection, of every kind; a join "
                          "or sync costs one more per 4 KiB of its reply")
    lim.add_argument("--frame-burst", type=int,
                     default=_env("FRAME_BURST", str(d.frame_rate.burst)))
    lim.add_argument("--max-sections", type=int,
                     default=_env("MAX_SECTIONS", str(d.max_sections)),
                     help="sections per room; a write that would add one more is refused")
    lim.add_argument("--room-idle-seconds", type=float,
                     default=_env("ROOM_IDLE_SECONDS", str(d.room_idle_seconds)),
                     help="a room with no member and no write for this long is dropped "
                          "from memory, its state with it")
    lim.add_argument("--outbound-budget", type=int,
                     default=_env("OUTBOUND_BUDGET", str(d.budget.bytes)),
                     help="unsent bytes per connection: likes are shed from 1/4 of it, comments "
                          "from 1/2, gifts from all of it")
    lim.add_argument("--slow-grace", type=float,
                     default=_env("SLOW_GRACE", str(d.budget.slow_grace)),
                     help="seconds over budget, or stalled (shedding and not draining), before "
                          "the slow-consumer close")
    lim.add_argument("--hello-timeout", type=float,
                     default=_env("HELLO_TIMEOUT", str(d.hello_timeout)))
    lim.add_argument("--max-fragments", type=int,
                     default=_env("MAX_FRAGMENTS", str(d.max_fragments)),
                     help="frames one WebSocket message may come in (past it: 1009)")
    lim.add_argument("--max-inbound-bytes", type=int,
                     default=_env("MAX_INBOUND_BYTES", str(d.max_inbound_bytes)),
                     help="bytes of client frames waiting for the node, per connection: a "
                          "WebSocket stops reading past it, a WebTransport session is closed "
                          "(4100)")
    lim.add_argument("--max-wt-sessions", type=int,
                     default=_env("MAX_WT_SESSIONS", str(d.max_wt_sessions)),
                     help="WebTransport sessions per QUIC connection (one more gets 429)")
    lim.add_argument("--online-interval", type=float,
                     default=_env("ONLINE_INTERVAL", str(d.online_interval)))
    lim.add_argument("--poll-threshold", type=int,
                     default=_env("POLL_THRESHOLD", str(d.poll_threshold)),
                     help="members of a room on this edge from which they take state by "
                          "polling the CDN instead of push (0: never)")
    lim.add_argument("--coalesce-window", type=float,
                     default=float(_env("COALESCE_WINDOW", str(d.coalesce_window))),
                     help="seconds; messages to a busy room within this window go out as "
                          "one batch frame per connection (0: off)")
    lim.add_argument("--lossy-sections",
                     default=_env("LOSSY_SECTIONS", ",".join(sorted(d.lossy_sections))),
                     help="comma-separated base names of sections whose changes go to QUIC "
                          "clients as unreliable datagrams (\"\": none)")
    add_quic_arguments(serve)
    add_http_arguments(serve)
    cdn = serve.add_argument_group("polling clients (CDN origin)")
    cdn.add_argument("--head-max-age", type=int, default=_env("HEAD_MAX_AGE", "1"),
                     help="seconds a shared cache may keep a room's head")
    cdn.add_argument("--head-stale-while-revalidate", type=int,
                     default=_env("HEAD_SWR", "2"),
                     help="seconds a cache may serve a stale head while it revalidates")
    add_agent_arguments(serve)

    add_agents_parser(sub)

    certs = sub.add_parser("certs", help="make a development certificate for QUIC (ECDSA "
                           "P-256, <= 14 days) and print its SHA-256 hash")
    certs.add_argument("--dir", type=Path, default=Path(_env("DATA_DIR", "data")) / "quic",
                       help="where quic-cert.pem and quic-key.pem are written")
    certs.add_argument("--host", action="append", default=None,
                       help="a DNS name or IP address the certificate is for (repeatable; "
                            "default: localhost and 127.0.0.1)")
    certs.add_argument("--days", type=int, default=10, help="validity, 1..14 days")
    certs.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))

    proxy = sub.add_parser("cdn-proxy", help="run nginx (cdn/nginx.conf) as a caching proxy "
                           "in front of an origin")
    proxy.add_argument("--listen", default=_env("CDN_LISTEN", "127.0.0.1:8081"),
                       help="host:port nginx listens on")
    proxy.add_argument("--origin", default=_env("CDN_ORIGIN", "http://127.0.0.1:8080"),
                       help="the liveroom origin, http://host:port")
    proxy.add_argument("--dir", type=Path, default=Path(_env("CDN_DIR", "data/cdn")),
                       help="runtime directory: config, cache, pid, logs")
    proxy.add_argument("--workers", type=int, default=_env("CDN_WORKERS", "1"))
    proxy.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    add_role_parsers(sub)  # edge, router, cdn, agents, cluster (liveroom.roles_cli)
    return p


def _config(args: argparse.Namespace) -> EdgeConfig:
    d = EdgeConfig()
    return EdgeConfig(
        max_frame_bytes=args.max_frame_bytes,
        max_value_bytes=args.max_value_bytes,
        error_log_lines=args.error_log_lines,
        error_log_interval=args.error_log_interval,
        max_rooms_per_conn=args.max_rooms,
        max_conns_per_user=args.max_conns_per_user,
        action_rate=Rate(args.action_rate, args.action_burst),
        peer_rate=Rate(args.peer_rate, args.peer_burst),
        inbox_max_messages=args.inbox_max_messages,
        inbox_max_bytes=args.inbox_max_bytes,
        frame_rate=Rate(args.frame_rate, args.frame_burst),
        max_sections=args.max_sections,
        room_idle_seconds=args.room_idle_seconds,
        budget=Budget(bytes=args.outbound_budget, slow_grace=args.slow_grace,
                      hard_factor=d.budget.hard_factor),
        hello_timeout=args.hello_timeout,
        online_interval=args.online_interval,
        coalesce_window=args.coalesce_window,
        poll_threshold=args.poll_threshold,
        max_fragments=args.max_fragments,
        max_inbound_bytes=args.max_inbound_bytes,
        max_wt_sessions=args.max_wt_sessions,
        poll_interval=float(args.head_max_age),
        lossy_sections=frozenset(s.strip() for s in args.lossy_sections.split(",")
                                 if s.strip()),
        http=http_timeouts(args),
    )


async def _serve(opts: ServeOptions) -> None:
    runner = web.AppRunner(make_app(opts), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = EdgeSite(runner, opts.host, opts.port)
    await site.start()
    # With --port 0 the kernel picks the port: report the one actually bound.
    port = int(runner.addresses[0][1]) if runner.addresses else opts.port
    # QUIC first: its log line then comes before "listening on", which tells
    # whoever reads the log that the whole edge is up.
    quic = await start_quic_edge(runner.app, opts, port)
    log.info("listening on http://%s:%d (node %s, dev=%s, data=%s)", opts.host, port,
             opts.node_id, opts.dev, opts.data_dir)
    await until_stopped()
    await runner.cleanup()
    if quic is not None:
        quic.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiohttp logs a traceback per malformed request, asyncio and aioquic a
    # line per broken transport: a client could fill the log at will.
    limit_client_driven_logs()
    if args.command == "cdn-proxy":
        from cdn import proxy as cdn_proxy

        prefix = args.dir.resolve()
        conf = cdn_proxy.prepare(prefix, cdn_proxy.render_config(
            listen=args.listen, origin=args.origin, prefix=prefix, workers=args.workers))
        log.info("nginx caching %s on http://%s (config %s)", args.origin, args.listen, conf)
        os.execv(cdn_proxy.find_nginx(), cdn_proxy.nginx_command(conf, prefix))
    if args.command == "certs":
        import datetime as dt

        from edge.certs import make_dev_cert

        info = make_dev_cert(args.dir, args.host or ["localhost", "127.0.0.1"],
                             dt.datetime.now(dt.UTC), days=args.days)
        print(f"certificate {info.cert}\nkey         {info.key}\n"
              f"valid until {info.not_after.isoformat()}\nsha256      {info.sha256}")
        return 0
    if args.command == "agents":
        return run_agents(args)
    if args.command in ROLE_COMMANDS:
        return run_role_command(args)
    if args.command == "serve":
        log.info("event loop: %s", _install_uvloop())
        opts = ServeOptions(
            host=args.host, port=args.port, dev=args.dev, data_dir=args.data_dir,
            jwt_secret=os.environ.get("LIVEROOM_JWT_SECRET"),
            api_key=os.environ.get("LIVEROOM_API_KEY"),
            demo_room=not args.no_demo_room, config=_config(args),
            quic_port=args.quic_port, quic_cert=args.quic_cert, quic_key=args.quic_key,
            quic_idle_timeout=args.quic_idle_timeout,
            cdn=CdnConfig(head_max_age=args.head_max_age,
                          head_stale_while_revalidate=args.head_stale_while_revalidate),
            agents=agent_options(args),
        )
        asyncio.run(_serve(opts))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
