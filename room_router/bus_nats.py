"""The bus on NATS: ``room.<id>`` and ``node.<id>`` subjects over a NATS cluster.

Theory of operation
-------------------
``Bus.publish`` and ``Bus.subscribe`` are synchronous: the edge calls them
from its fan-out and join paths, which never await. nats-py's calls are
coroutines, so every operation goes into one FIFO (a bounded deque) that one
pump task drains in order, awaiting nats-py there and nowhere else. One
connection and one FIFO keep each publisher's order: NATS delivers the
messages one connection publishes to a subject in the order it sent them,
and the pump sends them in the order ``publish`` was called. A subscribe
queued before a publish reaches the server first, so an edge hears its own
actions (the fan-out to its local members goes through the bus like
everyone else's: one path, each viewer exactly once).

The FIFO holds at most ``max_backlog`` publishes; past that a publish is
dropped and counted (actions are at most once by design; state heals by
versions; peer messages wait in the durable inbox). Subscribes and
unsubscribes are never dropped.

Failover: nats-py reconnects across the cluster's servers (the URLs given
plus those the cluster gossips), re-sends the subscriptions and flushes what
was buffered while it was away (up to ``pending_size`` bytes). Disconnects,
reconnects and errors are logged and counted
(``liveroom_bus_events_total{event=...}``).

Fault hook (tests only)
-----------------------
``BusFault`` drops or delays a share of the publishes of one subject kind
(``node`` by default: peer deliveries), to show that what rides on the bus
survives a lossy, reordering bus (tests/e2e/test_peer_chaos.py). A delayed
publish re-enters the FIFO later, after publishes made after it: reordered,
as a publish retried across a reconnect would be. Off unless
``LIVEROOM_TEST_BUS_FAULT`` is set (``BusFault.from_env``); the composition
root logs a warning when it is on.

Subject names
-------------
A NATS subject is dot-separated tokens; a token may not be empty nor hold
whitespace, ``*`` or ``>``. Room ids may hold ``.`` and ``:``
(``[A-Za-z0-9_.:-]``), so the id part of a logical subject is encoded as ONE
token: ``[A-Za-z0-9-]`` stay as they are and every other character becomes
``_`` followed by its two upper-case hex digits (``_`` -> ``_5F``, ``.`` ->
``_2E``, ``:`` -> ``_3A``). The encoding is injective (``_`` only ever starts
an escape), so two rooms never share a subject. An optional ``prefix``
(e.g. ``liveroom``) namespaces one deployment on a shared NATS:
``room.a.b`` -> ``liveroom.room.a_2Eb``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from prometheus_client import CollectorRegistry, Counter, Gauge

from room_router.bus import Handler, Subscription

log = logging.getLogger("liveroom.bus")

_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")

DEFAULT_MAX_BACKLOG = 100_000


def encode_token(text: str) -> str:
    """``text`` as one NATS subject token (see the module doc)."""
    if not text:
        raise ValueError("an empty id has no subject token")
    return "".join(c if c in _PLAIN else "".join(f"_{b:02X}" for b in c.encode())
                   for c in text)


def decode_token(token: str) -> str:
    out = bytearray()
    i = 0
    while i < len(token):
        c = token[i]
        if c == "_":
            out.append(int(token[i + 1:i + 3], 16))
            i += 3
        else:
            out += c.encode()
            i += 1
    return out.decode()


def wire_subject(subject: str, prefix: str = "") -> str:
    """The NATS subject of a logical one: ``room.<id>`` -> ``[prefix.]room.<token>``."""
    kind, sep, ident = subject.partition(".")
    if not sep or not kind or not ident:
        raise ValueError(f"a logical subject is <kind>.<id>, not {subject!r}")
    wire = f"{kind}.{encode_token(ident)}"
    return f"{prefix}.{wire}" if prefix else wire


def logical_subject(wire: str, prefix: str = "") -> str:
    if prefix:
        wire = wire[len(prefix) + 1:]
    kind, _, token = wire.partition(".")
    return f"{kind}.{decode_token(token)}"


class BusMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.events = Counter("liveroom_bus_events_total",
                              "Bus connection events (disconnected, reconnected, error, "
                              "slow_consumer, settle_timeout)", ["event"], registry=r)
        self.dropped = Counter("liveroom_bus_dropped_total",
                               "Publishes dropped because the outgoing backlog was full",
                               registry=r)
        self.backlog = Gauge("liveroom_bus_backlog", "Operations waiting for the bus pump",
                             registry=r)
        self.connected = Gauge("liveroom_bus_connected",
                               "1 while connected to a NATS server", registry=r)


class _NatsSubscription:
    """One logical subscription. ``active`` goes False on unsubscribe at once,
    so that a message already in nats-py's queue is not handed over after the
    edge left the room (a new subscription to the same room may exist by
    then, and a viewer must see each message once)."""

    __slots__ = ("_bus", "active", "handler", "nats_sub", "subject")

    def __init__(self, bus: NatsBus, subject: str, handler: Handler) -> None:
        self._bus = bus
        self.subject = subject
        self.handler = handler
        self.active = True
        self.nats_sub: NatsSubscription | None = None

    def unsubscribe(self) -> None:
        if self.active:
            self.active = False
            self._bus._enqueue(("unsub", self))

    async def on_msg(self, msg: Msg) -> None:
        if self.active:
            try:
                self.handler(self.subject, msg.data)
            except Exception:
                log.exception("bus handler for %s failed", self.subject)


@dataclass(frozen=True, slots=True)
class BusFault:
    """Test hook: drop ``drop`` and delay ``delay`` (a share each, 0..1) of
    the publishes to ``kind.*`` subjects; a delay is uniform in
    [0, ``max_delay``] seconds."""

    drop: float = 0.0
    delay: float = 0.0
    max_delay: float = 0.2
    kind: str = "node"
    seed: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BusFault | None:
        """``LIVEROOM_TEST_BUS_FAULT="drop=0.1,delay=0.2,max_delay=0.3,kind=node,seed=1"``
        (any subset); None when unset or empty."""
        spec = environ.get("LIVEROOM_TEST_BUS_FAULT", "").strip()
        if not spec:
            return None
        fields: dict[str, Any] = {}
        for part in spec.split(","):
            key, _, value = part.partition("=")
            key = key.strip()
            if key in ("drop", "delay", "max_delay"):
                fields[key] = float(value)
            elif key == "kind":
                fields[key] = value.strip()
            elif key == "seed":
                fields[key] = int(value)
            else:
                raise ValueError(f"LIVEROOM_TEST_BUS_FAULT: unknown key {key!r}")
        return cls(**fields)


# ("pub", wire subject, payload) | ("sub" | "unsub", sub) | ("mark", future)
_Op = tuple[Any, ...]


class NatsBus:
    """``room_router.bus.Bus`` on a NATS connection (see the module doc)."""

    def __init__(self, nc: NatsClient, *, prefix: str = "",
                 metrics: BusMetrics | None = None,
                 max_backlog: int = DEFAULT_MAX_BACKLOG,
                 fault: BusFault | None = None) -> None:
        self._nc = nc
        self._fault = fault
        self._fault_rng = random.Random(fault.seed if fault else None)
        self.prefix = prefix
        self.metrics = metrics or BusMetrics()
        self._max_backlog = max_backlog
        self._ops: deque[_Op] = deque()
        self._publishes = 0  # publishes in _ops (only these count against the bound)
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def connect(cls, servers: Sequence[str], *, name: str = "liveroom",
                      prefix: str = "", metrics: BusMetrics | None = None,
                      reconnect_wait: float = 0.25, connect_timeout: float = 2.0,
                      ping_interval: float = 5.0, pending_size: int = 8 << 20,
                      max_backlog: int = DEFAULT_MAX_BACKLOG,
                      fault: BusFault | None = None) -> NatsBus:
        """Connect to any of ``servers`` (``nats://host:port``) and start the pump.
        Retries forever after a disconnect; the first connect must succeed."""
        m = metrics or BusMetrics()
        holder: list[NatsBus] = []

        async def disconnected() -> None:
            m.events.labels("disconnected").inc()
            m.connected.set(0)
            log.warning("bus: disconnected from NATS; reconnecting")

        async def reconnected() -> None:
            m.events.labels("reconnected").inc()
            m.connected.set(1)
            url = holder[0]._nc.connected_url if holder else None
            log.warning("bus: reconnected to NATS at %s", url.netloc if url else "?")

        async def error(exc: Exception) -> None:
            name = "slow_consumer" if isinstance(exc, nats.errors.SlowConsumerError) else "error"
            m.events.labels(name).inc()
            log.warning("bus: %s: %s", type(exc).__name__, exc)

        async def closed() -> None:
            m.connected.set(0)
            log.info("bus: connection closed")

        nc = await nats.connect(
            servers=list(servers), name=name, allow_reconnect=True,
            max_reconnect_attempts=-1,
            # Seconds before the SAME server is tried again; the others are
            # tried at once, which is what makes failover quick.
            reconnect_time_wait=reconnect_wait,
            connect_timeout=connect_timeout,
            ping_interval=ping_interval,
            max_outstanding_pings=2, pending_size=pending_size,
            disconnected_cb=disconnected, reconnected_cb=reconnected,
            error_cb=error, closed_cb=closed)
        m.connected.set(1)
        bus = cls(nc, prefix=prefix, metrics=m, max_backlog=max_backlog, fault=fault)
        holder.append(bus)
        bus.start()
        return bus

    @property
    def connected_url(self) -> str | None:
        url = self._nc.connected_url
        return None if url is None else f"nats://{url.netloc}"

    def start(self) -> None:
        if self._pump_task is None:
            self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    # -- the Bus protocol (synchronous, never awaits) --------------------
    def publish(self, subject: str, payload: bytes) -> None:
        if self._closed:
            return
        if self._publishes >= self._max_backlog:
            self.metrics.dropped.inc()
            return
        fault = self._fault
        if fault is not None and subject.startswith(fault.kind + "."):
            roll = self._fault_rng.random()
            if roll < fault.drop:
                return
            if roll < fault.drop + fault.delay:
                wait = self._fault_rng.uniform(0.0, fault.max_delay)
                asyncio.get_running_loop().call_later(wait, self._publish_now, subject,
                                                      payload)
                return
        self._publish_now(subject, payload)

    def _publish_now(self, subject: str, payload: bytes) -> None:
        if self._closed:
            return
        self._publishes += 1
        self._enqueue(("pub", wire_subject(subject, self.prefix), payload))

    def subscribe(self, subject: str, handler: Handler) -> Subscription:
        sub = _NatsSubscription(self, subject, handler)
        self._enqueue(("sub", sub))
        return sub

    def _enqueue(self, op: _Op) -> None:
        self._ops.append(op)
        self._wake.set()

    # -- the pump --------------------------------------------------------
    async def _pump(self) -> None:
        nc = self._nc
        ops = self._ops
        while True:
            await self._wake.wait()
            self._wake.clear()
            self.metrics.backlog.set(len(ops))
            while ops:
                op = ops.popleft()
                try:
                    if op[0] == "pub":
                        self._publishes -= 1
                        await nc.publish(op[1], op[2])
                    elif op[0] == "sub":
                        await self._subscribe(op[1])
                    elif op[0] == "mark":
                        if not op[1].done():
                            op[1].set_result(None)
                    else:
                        sub: _NatsSubscription = op[1]
                        if sub.nats_sub is not None:
                            nats_sub, sub.nats_sub = sub.nats_sub, None
                            await nats_sub.unsubscribe()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # OutboundBufferLimitError while reconnecting with a full
                    # buffer, a closed connection: the op is lost, counted.
                    self.metrics.events.labels("error").inc()
                    log.warning("bus: %s failed: %s: %s", op[0], type(exc).__name__, exc)

    async def _subscribe(self, sub: _NatsSubscription) -> None:
        if not sub.active:
            return  # unsubscribed before the pump got to it
        sub.nats_sub = await self._nc.subscribe(
            wire_subject(sub.subject, self.prefix), cb=sub.on_msg)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued op has been handed to the server (tests,
        shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # A mark in the FIFO: done when the pump has passed everything before it.
        mark: asyncio.Future[None] = loop.create_future()
        self._enqueue(("mark", mark))
        await asyncio.wait_for(mark, timeout)
        await self._nc.flush(timeout=max(0.1, deadline - loop.time()))  # type: ignore[arg-type]

    async def settled(self, timeout: float = 1.0) -> None:
        """The queued subscriptions sent and the server's PONG back (the
        server has them). Best effort, at most ``timeout``: a slow or
        reconnecting bus delays no join longer than that. In a NATS cluster
        the other servers learn of the interest a moment later still."""
        try:
            # The whole of it under the bound: nats-py's own flush can wait
            # on its pending buffer before its timeout starts (a connection
            # that is reconnecting), which once held a join for minutes.
            await asyncio.wait_for(self.flush(timeout), timeout)
        except Exception:
            self.metrics.events.labels("settle_timeout").inc()

    async def close(self) -> None:
        if self._closed:
            return
        try:
            await self.flush(2.0)
        except Exception:
            log.debug("bus: flush before close failed", exc_info=True)
        self._closed = True
        if self._pump_task is not None:
            self._pump_task.cancel()
            try:
                await self._pump_task
            except asyncio.CancelledError:
                pass
        await self._nc.close()
