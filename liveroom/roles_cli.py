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

from liveroom.distributed import RoleProcess, describe
from liveroom.events_wiring import add_webhooks_parser, run_webhooks
from liveroom.flags import (
    add_cdn_arguments,
    add_cluster_arguments,
    add_event_arguments,
    add_http_arguments,
    add_limit_arguments,
    add_node_arguments,
    add_quic_arguments,
    add_service_arguments,
    env,
    role_options,
)
from liveroom.options import RoleOptions

log = logging.getLogger("liveroom")

ROLE_COMMANDS = ("edge", "router", "cdn", "cluster", "webhooks")


def add_role_parsers(sub: Any) -> None:
    """Add the role sub-commands to the ``liveroom`` parser."""
    edge = sub.add_parser("edge", help="an edge node: client WebSockets, placement, bus")
    add_node_arguments(edge, "edge", 8080)
    add_service_arguments(edge)
    add_limit_arguments(edge)  # the same table as liveroom serve's
    add_http_arguments(edge)
    add_cdn_arguments(edge)  # the edge answers the polling origin too
    # Off unless asked for: the edges of one machine (liveroom cluster) would
    # otherwise share --dev's certificate directory.
    add_quic_arguments(edge, default_port="off")
    add_event_arguments(edge, webhook=False, jetstream=True)  # --events: publish to JetStream
    router = sub.add_parser("router", help="answers GET /v1/route from the node registry")
    add_node_arguments(router, "router", 8070)
    add_service_arguments(router)
    add_http_arguments(router)
    cdn = sub.add_parser("cdn", help="the polling origin (head, versioned sections) over "
                         "the shared state store")
    add_node_arguments(cdn, "cdn", 8090)
    add_service_arguments(cdn)
    add_http_arguments(cdn)
    add_cdn_arguments(cdn)
    add_webhooks_parser(sub)  # the cluster's event dispatcher (liveroom.events_wiring)
    cluster = sub.add_parser("cluster", help="a local multi-process cluster: N edges and a "
                             "router against the given services")
    cluster.add_argument("--edges", type=int, default=3)
    cluster.add_argument("--host", default=env("HOST", "127.0.0.1"))
    cluster.add_argument("--port", type=int, default=env("PORT", "8070"),
                         help="the router's port (edges take free ports)")
    add_cluster_arguments(cluster)
    cluster.add_argument("--data-dir", type=Path, default=env("DATA_DIR", "data"))
    cluster.add_argument("--dev", action="store_true")
    cluster.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))
    add_service_arguments(cluster)


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
    if args.command == "webhooks":
        asyncio.run(run_webhooks(args, until_stopped))
    else:
        asyncio.run(_run(role_options(args, args.command)))
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
