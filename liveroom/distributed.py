"""Composition root of the distributed deployment: the ``edge``, ``router``
and ``cdn`` roles, each a process wired to NATS, Redis and PostgreSQL.

Every role opens its ``Services`` through ``liveroom.services.open_services``
(what ``--nats``, ``--redis`` and ``--postgres`` name, embedded pieces for the
rest). An edge is built as ``liveroom serve`` builds it
(``liveroom.wiring.build_edge``) plus a placement gate; every role keeps the
cluster's view with a ``liveroom.heartbeat.Heartbeat``. The router role
answers ``GET /v1/route`` from that view; the cdn role serves the polling
origin over the shared store.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from cdn.origin import CdnOrigin
from edge.api_rooms import ONLINE_KEY
from edge.http_site import TimedSite, counter_of
from edge.metrics import Metrics
from edge.node import EdgeNode
from edge.quic import QuicEdge
from edge.web import errors_middleware, metrics_response
from edge.ws_conn import EdgeSite
from liveroom.heartbeat import Heartbeat
from liveroom.options import RoleOptions
from liveroom.services import Services, open_services
from liveroom.wiring import EdgeSecrets, EdgeTimers, build_edge, start_quic_edge
from room_router.gate import ClusterView, PlacementGate
from room_router.nodes import NodeInfo
from room_router.route_http import add_route_endpoint

log = logging.getLogger("liveroom.distributed")


def _jwt_secret(opts: RoleOptions) -> str:
    if opts.jwt_secret:
        return opts.jwt_secret
    raise SystemExit("LIVEROOM_JWT_SECRET is required for the distributed roles (every "
                     "edge must verify the same tokens)")


class RoleProcess:
    """One role's aiohttp application, services and timers."""

    def __init__(self, opts: RoleOptions, services: Services | None = None,
                 metrics: Metrics | None = None) -> None:
        """``services``: already open ones (tests share a store between
        in-process edges); else ``start`` opens them from ``opts``."""
        if opts.role not in ("edge", "router", "cdn"):
            raise SystemExit(f"unknown role {opts.role!r}")
        self.opts = opts
        self.metrics = metrics or Metrics()
        self.services: Services | None = services
        self.node: EdgeNode | None = None
        self.view: ClusterView | None = None
        self.heartbeat: Heartbeat | None = None
        self.runner: web.AppRunner | None = None
        self.quic: QuicEdge | None = None
        self.url = ""
        self.public_url = ""
        self.timers: EdgeTimers | None = None

    async def start(self) -> RoleProcess:
        try:
            return await self._start()
        except BaseException:
            await self.stop()  # whatever was opened before the failure
            raise

    async def _start(self) -> RoleProcess:
        opts = self.opts
        s = self.services
        if s is None:
            s = self.services = await open_services(opts, self.metrics)
        await s.open()
        view = self.view = ClusterView(s.store, s.online, big_threshold=opts.big_threshold,
                                       clock=time.time)
        if opts.role == "edge":
            app = self._edge_app(s, view)
        else:
            app = web.Application(middlewares=[errors_middleware()])
            app.router.add_get("/healthz", self._healthz)
            app.router.add_get("/metrics", self._metrics)
            if opts.role == "cdn":
                CdnOrigin(s.store, opts.cdn, self.metrics.registry).add_routes(app)
        add_route_endpoint(app, view)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self.runner.setup()
        # An edge's WebSockets get connections of their own (edge/ws_conn.py).
        # Every role's HTTP connections are timed (head, body, idle keep-alive).
        site = EdgeSite(self.runner, opts.host, opts.port) if opts.role == "edge" else \
            TimedSite(self.runner, opts.host, opts.port, timeouts=opts.config.http,
                      count=counter_of(self.metrics))
        await site.start()
        port = int(self.runner.addresses[0][1]) if self.runner.addresses else opts.port
        if opts.role == "edge":
            self.quic = await start_quic_edge(app, opts, port)
        self.url = f"http://{opts.host}:{port}"
        self.public_url = opts.public_url or f"ws://{opts.host}:{port}/ws"
        roles = ("edge",) if opts.role == "edge" else (opts.role,)
        info = NodeInfo(opts.node_id, opts.group, self.public_url, roles)
        self.heartbeat = Heartbeat(info=info, services=s, view=view, node=self.node,
                                   period=opts.heartbeat)
        await self.heartbeat.beat()  # the first view before we say we listen
        self.heartbeat.start()
        if self.timers is not None:
            self.timers.start_online()
        return self

    def _edge_app(self, s: Services, view: ClusterView) -> web.Application:
        opts = self.opts
        secrets = EdgeSecrets(_jwt_secret(opts), opts.api_key, opts.dev)
        node, app = build_edge(s, node_id=opts.node_id, config=opts.config, cdn=opts.cdn,
                               secrets=secrets, metrics=self.metrics,
                               rooms_config=opts.rooms_config, hooks=opts.hooks)
        self.node = node
        node.gate = PlacementGate(view, opts.group)
        app[ONLINE_KEY] = s.online  # room info and listing: cluster-wide counts
        node.start()
        self.timers = EdgeTimers(node, s, keep=set())
        self.timers.start_sweeping()
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        groups = self.view.placement.groups if self.view else {}
        return web.json_response({"status": "ok", "node": self.opts.node_id,
                                  "role": self.opts.role, "groups": sorted(groups)})

    async def _metrics(self, request: web.Request) -> web.Response:
        return metrics_response(self.metrics.registry)

    async def stop(self) -> None:
        """Deregister, close the clients (4101), close the services. Idempotent."""
        timers, self.timers = self.timers, None
        if timers is not None:
            timers.cancel()
        heartbeat, self.heartbeat = self.heartbeat, None
        if heartbeat is not None:
            await heartbeat.stop()
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()  # closes clients with 4101 (on_shutdown)
        quic, self.quic = self.quic, None
        if quic is not None:
            quic.close()
        if self.node is not None:
            self.node.stop()
        if self.services is not None:
            await self.services.close()


def describe(proc: RoleProcess) -> dict[str, Any]:
    return {"role": proc.opts.role, "node": proc.opts.node_id, "group": proc.opts.group,
            "url": proc.url, "public_url": proc.public_url}
