"""The ``liveroom`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from aiohttp import web

from edge.ws_conn import EdgeSite
from liveroom.agents_cli import add_agents_parser, run_agents
from liveroom.app import make_app
from liveroom.flags import (
    add_agent_arguments,
    add_cdn_arguments,
    add_event_arguments,
    add_http_arguments,
    add_limit_arguments,
    add_quic_arguments,
    env,
    serve_options,
)
from liveroom.options import ServeOptions
from liveroom.roles_cli import ROLE_COMMANDS, add_role_parsers, run_role_command, until_stopped
from liveroom.wiring import start_quic_edge
from plumbing.ratelog import limit_client_driven_logs

log = logging.getLogger("liveroom")


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
    serve.add_argument("--host", default=env("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=env("PORT", "8080"),
                       help="TCP port; 0 picks a free one (logged at start)")
    serve.add_argument("--dev", action="store_true",
                       help="development mode: POST /v1/dev/token mints tokens; a JWT secret "
                            "(kept in the data dir) and an API key are made when not set")
    serve.add_argument("--data-dir", type=Path, default=Path(env("DATA_DIR", "data")),
                       help="where the durable files live (the peer inbox)")
    serve.add_argument("--no-demo-room", action="store_true",
                       help="do not seed the 'demo' room's state")
    serve.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))
    add_limit_arguments(serve)
    add_quic_arguments(serve)
    add_http_arguments(serve)
    add_cdn_arguments(serve)
    add_agent_arguments(serve)
    add_event_arguments(serve, webhook=True, jetstream=False)

    add_agents_parser(sub)

    certs = sub.add_parser("certs", help="make a development certificate for QUIC (ECDSA "
                           "P-256, <= 14 days) and print its SHA-256 hash")
    certs.add_argument("--dir", type=Path, default=Path(env("DATA_DIR", "data")) / "quic",
                       help="where quic-cert.pem and quic-key.pem are written")
    certs.add_argument("--host", action="append", default=None,
                       help="a DNS name or IP address the certificate is for (repeatable; "
                            "default: localhost and 127.0.0.1)")
    certs.add_argument("--days", type=int, default=10, help="validity, 1..14 days")
    certs.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))

    proxy = sub.add_parser("cdn-proxy", help="run nginx (cdn/nginx.conf) as a caching proxy "
                           "in front of an origin")
    proxy.add_argument("--listen", default=env("CDN_LISTEN", "127.0.0.1:8081"),
                       help="host:port nginx listens on")
    proxy.add_argument("--origin", default=env("CDN_ORIGIN", "http://127.0.0.1:8080"),
                       help="the liveroom origin, http://host:port")
    proxy.add_argument("--dir", type=Path, default=Path(env("CDN_DIR", "data/cdn")),
                       help="runtime directory: config, cache, pid, logs")
    proxy.add_argument("--workers", type=int, default=env("CDN_WORKERS", "1"))
    proxy.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))
    add_role_parsers(sub)  # edge, router, cdn, agents, cluster (liveroom.roles_cli)
    return p


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
        opts = serve_options(args)
        asyncio.run(_serve(opts))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
