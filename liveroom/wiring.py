"""The wiring every edge shares, embedded (``liveroom serve``) or distributed
(``liveroom edge``): given a set of services, ``build_edge`` makes the node
and its aiohttp application (the client API, the WebSocket, the polling
origin); ``EdgeTimers`` are the node's process-wide timers (the online
count, the idle-room sweep); ``start_quic_edge`` puts WebTransport beside it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from aiohttp import web

from cdn.origin import CdnConfig, CdnOrigin
from edge.appkeys import NODE_KEY, QUIC_KEY
from edge.certs import cert_info, dev_cert
from edge.config import EdgeConfig
from edge.metrics import Metrics
from edge.node import EdgeNode
from edge.quic import QuicEdge, QuicOptions, start_quic
from edge.web import build_app
from liveroom.services import Services
from plumbing.ratelog import RateLimitedLog
from room_router.hooks import HookClient, HookConfig
from room_router.roomconfig import RoomPolicies
from state_versions.store import MemoryStateStore

log = logging.getLogger("liveroom")


@dataclass(frozen=True, slots=True)
class EdgeSecrets:
    jwt_secret: str
    api_key: str | None
    dev: bool


def load_room_policies(path: Path | None) -> RoomPolicies:
    """The rooms config at ``path`` (None: the defaults); a usage error
    (exit) saying what is wrong with the file."""
    try:
        return RoomPolicies.from_file(path)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--rooms-config: {exc}") from None


def reload_on_sighup(policies: RoomPolicies) -> Callable[[], None]:
    """Reload ``policies`` from its file on SIGHUP (logged either way);
    returns what removes the handler."""
    def reload() -> None:
        why = policies.reload()
        if why is None:
            log.info("rooms config reloaded from %s", policies.path)
        else:
            log.error("rooms config NOT reloaded (the one in force stays): %s", why)

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reload)
    def remove() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return remove


def build_edge(services: Services, *, node_id: str, config: EdgeConfig, cdn: CdnConfig,
               secrets: EdgeSecrets, metrics: Metrics,
               rooms_config: Path | None = None,
               hooks: HookConfig | None = None) -> tuple[EdgeNode, web.Application]:
    """The edge node on ``services`` and its application: the client API and
    WebSocket (``edge.web``) with the polling origin on the same app. The
    caller starts the node (``node.start()``) when its services are open;
    the app's shutdown closes the clients with 4101 (reconnect).
    ``rooms_config``: the rooms config file, reloaded on SIGHUP; ``hooks``:
    the backend hooks (signed with the API key unless they have a secret)."""
    policies = load_room_policies(rooms_config)
    hook_client = None
    if hooks is not None and hooks.url:
        if not hooks.secret:
            hooks = replace(hooks, secret=secrets.api_key)
        hook_client = HookClient(hooks, metrics.registry,
                                 RateLimitedLog(logging.getLogger("liveroom.hooks")))
        log.info("backend hooks: %s (timeout %g s, %d in flight per hook%s)", hooks.url,
                 hooks.timeout, hooks.concurrency, ", connect proxy" if hooks.connect else "")
    node = EdgeNode(node_id=node_id, config=config, jwt_secret=secrets.jwt_secret,
                    store=services.store, bus=services.bus, registry=services.registry,
                    inbox=services.inbox, metrics=metrics,
                    shared_action_limiter=services.shared_action_limiter,
                    policies=policies, history=services.history,
                    presence_store=services.presence, sanctions=services.sanctions,
                    hooks=hook_client, events=services.events)
    if node.hub.send_loop != config.send_loop:
        log.warning("fan-out send loop: python (edge._sendloop was not built: no C "
                    "compiler at install?)")
    else:
        log.info("fan-out send loop: %s", node.hub.send_loop)
    app = build_app(node, jwt_secret=secrets.jwt_secret, api_key=secrets.api_key,
                    dev=secrets.dev)
    CdnOrigin(services.store, cdn, metrics.registry).add_routes(app)

    async def close_connections(app: web.Application) -> None:
        # on_shutdown runs before aiohttp waits for the open handlers, so the
        # clients hear 4101 (reconnect) instead of a dropped socket.
        node.stop()

    app.on_shutdown.append(close_connections)

    async def close_hooks(app: web.Application) -> None:
        await node.proxies.close()

    app.on_cleanup.append(close_hooks)
    if rooms_config is not None:
        async def sighup(app: web.Application) -> AsyncIterator[None]:
            remove = reload_on_sighup(policies)
            yield
            remove()

        app.cleanup_ctx.append(sighup)
    return node, app


class Every:
    """``fn()`` every ``period`` seconds on the running loop: one timer,
    re-armed after each call (even one that raised), until ``cancel()``."""

    __slots__ = ("_fn", "_handle", "period")

    def __init__(self, period: float, fn: Callable[[], object]) -> None:
        self.period = period
        self._fn = fn
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(self.period, self._tick)

    def _tick(self) -> None:
        try:
            self._fn()
        finally:
            self.start()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class EdgeTimers:
    """An edge's process-wide timers: the online count (one timer for the
    whole node, not a task per room) and, on an in-memory state store, the
    idle-room sweep (``Sweeper``). ``cancel()`` stops both."""

    __slots__ = ("_online", "_sweep")

    def __init__(self, node: EdgeNode, services: Services, *, keep: set[str]) -> None:
        self._online = Every(node.config.online_interval, node.tick_online)
        self._sweep: Every | None = None
        if isinstance(services.store, MemoryStateStore):
            # The embedded store: idle rooms leave memory. Every tenth of the
            # idle time (at most a minute), so a room is dropped between 0.9
            # and 1.1 times room_idle_seconds after its last write or member.
            idle_for = node.config.room_idle_seconds
            self._sweep = Every(min(60.0, idle_for / 10),
                                Sweeper(services.store, node, keep).sweep)

    def start_sweeping(self) -> None:
        if self._sweep is not None:
            self._sweep.start()

    def start_online(self) -> None:
        self._online.start()

    def cancel(self) -> None:
        self._online.cancel()
        if self._sweep is not None:
            self._sweep.cancel()


class Sweeper:
    """What drops idle rooms from a process's in-memory state store
    (``MemoryStateStore.drop_idle``), whatever their number: one timer
    (``EdgeTimers``) calls ``sweep``, no task or timer per room; the rooms
    with members here (seen by the sweeps) and ``keep`` stay."""

    __slots__ = ("_keep", "_node", "_store", "dropped")

    def __init__(self, store: MemoryStateStore, node: EdgeNode, keep: set[str]) -> None:
        self._store = store
        self._node = node
        self._keep = keep
        self.dropped = 0

    def sweep(self) -> None:
        busy = self._node.hub.rooms.keys() | self._keep
        dropped = self._store.drop_idle(busy)
        if dropped:
            self.dropped += len(dropped)
            log.info("dropped %d idle rooms from memory", len(dropped))


class QuicConfigured(Protocol):
    """What ``start_quic_edge`` reads: ``ServeOptions`` and the distributed
    roles' ``RoleOptions`` both have it."""

    host: str
    port: int
    dev: bool
    data_dir: Path
    quic_port: str
    quic_cert: Path | None
    quic_key: Path | None
    quic_idle_timeout: float
    config: EdgeConfig


async def start_quic_edge(app: web.Application, opts: QuicConfigured,
                          tcp_port: int) -> QuicEdge | None:
    """Start the QUIC edge next to the HTTP one (see ServeOptions.quic_port),
    and publish its address and certificate hash at ``GET /v1/quic``."""
    if opts.quic_port == "off":
        log.info("quic off (--quic-port off)")
        return None
    if opts.quic_cert is not None and opts.quic_key is not None:
        cert = cert_info(opts.quic_cert, opts.quic_key)
    elif opts.dev:
        cert = dev_cert(opts.data_dir / "quic", sorted({"localhost", "127.0.0.1", opts.host}),
                        dt.datetime.now(dt.UTC))
    else:
        if opts.quic_port != "auto":
            raise SystemExit("--quic-port needs --quic-cert and --quic-key (or --dev)")
        log.info("quic off (no --quic-cert/--quic-key)")
        return None
    if opts.quic_port == "auto":
        # Next to the TCP port; with --port 0 (a free port) a free one too.
        port = tcp_port + 1 if opts.port else 0
    else:
        port = int(opts.quic_port)
    # aioquic logs every connection at INFO: too much for an edge.
    logging.getLogger("quic").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
    # Test hook only: drop this share of outgoing datagrams (lossy sections).
    loss = float(os.environ.get("LIVEROOM_TEST_DATAGRAM_LOSS", "0") or 0)
    edge = await start_quic(app[NODE_KEY], QuicOptions(
        host=opts.host, port=port, cert=str(cert.cert), key=str(cert.key),
        cert_sha256=cert.sha256, datagram_loss=loss, idle_timeout=opts.quic_idle_timeout))
    app[QUIC_KEY].update({
        "port": edge.port, "path": "/wt", "cert_sha256": cert.sha256,
        "cert_not_after": cert.not_after.timestamp(),
        "datagrams": {"lossy_sections": sorted(opts.config.lossy_sections)},
    })
    log.info("quic listening on udp://%s:%d/wt (certificate sha256 %s, valid until %s)",
             opts.host, edge.port, cert.sha256, cert.not_after.isoformat())
    if loss:
        log.warning("test hook: dropping %.0f%% of outgoing datagrams", loss * 100)
    return edge
