"""The model gateway: every model call of a process through one queue per
model, with failover across the model's servers.

``GatewayBackend`` is a ``ModelBackend`` (``backends/base.py``) in front of
one model's servers, so the runtime, the direct interactions and the tests
see one backend as before; what it decides is pure and lives in
``llm_agents.gateway_queue`` (priorities, the concurrency cap, the
queue-time limit, shorter replies under load, which server). Here:

- a call waits on a future the queue's ``dispatch`` resolves; a timer wakes
  the queue when the oldest waiting call reaches the queue-time limit, so
  it is refused on time (``model_busy``) even when no slot frees;
- a call that fails on its server before any text reached the room (a
  dead server: connection refused, a breaker open, a timeout) marks that
  server down and waits again at the head of its priority for another
  server (failover); after text has streamed it is not retried (the room
  has seen half a reply);
- a health loop probes every server that can be probed (``probe()``: an
  OpenAI-compatible server's ``GET /models``) every ``health_interval_s``
  and marks it up or down, unless it has calls of ours in flight (then it is
  alive, and the calls' own failures mark it down); a server without a probe (the in-process
  backends) is never marked up again by it, and a model with one server is
  never marked down (nowhere to fail over to: its breaker decides);
- a caller cancelled while it waits (a reply preempted by a gift) leaves
  the queue; one cancelled while it streams gives its slot back.

Metrics: ``liveroom_model_queue_wait_seconds{model,priority}``,
``liveroom_model_refused_total{model,reason}``,
``liveroom_model_failover_total{model}``, ``liveroom_model_server_up{model,server}``,
``liveroom_model_waiting{model}``, ``liveroom_model_in_flight{model}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from llm_agents.backends.base import Chunk, ModelBackend, ReplyRequest
from llm_agents.gateway_queue import (
    GATEWAY_PRIORITY,
    NO_SERVER,
    PRIORITY_NAMES,
    QUEUE_TIMEOUT,
    GatewayConfig,
    ModelQueue,
    Ticket,
)
from wire.errors import ModelBusy, ModelUnavailable

log = logging.getLogger("liveroom.agents.gateway")

# Queue waits kept per priority for ``waits()`` (the benchmark's percentiles).
WAIT_SAMPLES = 10_000


@dataclass(frozen=True, slots=True)
class ModelServer:
    """One server of a model: its backend, and how to probe its health."""

    name: str
    backend: ModelBackend
    probe: Callable[[], Awaitable[bool]] | None = None


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.wait = Histogram(
            "liveroom_model_queue_wait_seconds", "Time a model call waited for a slot",
            ["model", "priority"],
            # Millisecond buckets too: a gateway with free slots queues for less than 0.01 s.
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=r)
        self.refused = Counter("liveroom_model_refused_total",
                               "Model calls refused by the gateway, by reason",
                               ["model", "reason"], registry=r)
        self.failover = Counter("liveroom_model_failover_total",
                                "Model calls moved to another server after a failure",
                                ["model"], registry=r)
        self.waiting = Gauge("liveroom_model_waiting", "Model calls waiting for a slot",
                             ["model"], registry=r)
        self.in_flight = Gauge("liveroom_model_in_flight", "Model calls holding a slot",
                               ["model"], registry=r)
        self.up = Gauge("liveroom_model_server_up", "1 when a model server is marked up",
                        ["model", "server"], registry=r)


class GatewayBackend:
    """One model's queue and servers, as a ``ModelBackend``."""

    def __init__(self, model: str, servers: Sequence[ModelServer], config: GatewayConfig,
                 metrics: GatewayMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        self.servers = list(servers)
        self.label = self.servers[0].backend.label
        self.config = config
        self.queue = ModelQueue(len(self.servers), config)
        self.metrics = metrics
        self._clock = clock
        self._futures: dict[int, asyncio.Future[int]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._health: asyncio.Task[None] | None = None
        self._waits: dict[str, deque[float]] = {n: deque(maxlen=WAIT_SAMPLES)
                                                for n in PRIORITY_NAMES.values()}
        if metrics is not None:
            for s in self.servers:
                metrics.up.labels(model, s.name).set(1)

    @property
    def breaker(self) -> object:
        """The first server's breaker, for ``GET /v1/rooms/{room}/agents``."""
        return getattr(self.servers[0].backend, "breaker", None)

    def waits(self) -> dict[str, list[float]]:
        """The recent queue waits per priority name (seconds)."""
        return {k: list(v) for k, v in self._waits.items()}

    # -- the queue -----------------------------------------------------------
    def _pump(self) -> None:
        """Resolve what the queue decides now; re-arm the expiry timer."""
        now = self._clock()
        for ticket, outcome in self.queue.dispatch(now):
            fut = self._futures.pop(ticket.id, None)
            if fut is None or fut.done():
                self.queue.release(ticket)
                continue
            if isinstance(outcome, int):
                fut.set_result(outcome)
            elif outcome == QUEUE_TIMEOUT:
                self._refused(QUEUE_TIMEOUT)
                fut.set_exception(ModelBusy(
                    f"the model {self.model!r} is busy: no slot within "
                    f"{self.config.max_wait_s:g} s", reason=QUEUE_TIMEOUT,
                    retry_after=self.queue.retry_after()))
            else:
                self._refused(NO_SERVER)
                fut.set_exception(ModelUnavailable(
                    f"no server of the model {self.model!r} is up",
                    retry_after=self.config.health_interval_s))
        if self.metrics is not None:
            self.metrics.waiting.labels(self.model).set(len(self.queue))
            self.metrics.in_flight.labels(self.model).set(sum(self.queue.in_flight))
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = self.queue.next_expiry()
        if at is not None:
            delay = max(0.0, at - self._clock()) + 0.001
            self._timer = asyncio.get_running_loop().call_later(delay, self._pump)

    def _refused(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.refused.labels(self.model, reason).inc()

    async def _slot(self, ticket: Ticket) -> int:
        """Wait until ``ticket`` holds a slot; its server."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._futures[ticket.id] = fut
        self._pump()
        try:
            return await fut
        except asyncio.CancelledError:
            self._futures.pop(ticket.id, None)
            self.queue.cancel(ticket)
            self._pump()
            raise

    # -- ModelBackend ----------------------------------------------------------
    async def stream(self, request: ReplyRequest) -> AsyncIterator[Chunk]:
        self._start_health()
        priority = GATEWAY_PRIORITY.get(request.trigger.kind, 0)
        pname = PRIORITY_NAMES[priority]
        ticket = self.queue.submit(priority, self._clock())
        if ticket is None:
            self._refused("queue_full")
            raise ModelBusy(f"the model {self.model!r} is busy: "
                            f"{self.config.queue_size} calls are waiting",
                            reason="queue_full", retry_after=self.queue.retry_after())
        try:
            while True:
                server = await self._slot(ticket)
                if ticket.failed:
                    pass  # a failover: its first wait is what was measured
                else:
                    waited = self._clock() - ticket.at
                    self._waits[pname].append(waited)
                    if self.metrics is not None:
                        self.metrics.wait.labels(self.model, pname).observe(waited)
                call = replace(request, max_tokens=self.queue.max_tokens(request.max_tokens))
                produced = False
                try:
                    async for item in self.servers[server].backend.stream(call):
                        produced = produced or isinstance(item, str)
                        yield item
                    return
                except Exception as exc:
                    if produced or len(self.servers) == 1:
                        raise  # nowhere to fail over to: the server's breaker decides
                    log.warning("model %s: server %s failed before any text (%s): "
                                "failing over", self.model, self.servers[server].name, exc)
                    self._set_up(server, False)
                    self.queue.requeue(ticket)
                    if self.metrics is not None:
                        self.metrics.failover.labels(self.model).inc()
        finally:
            self.queue.cancel(ticket)
            self._pump()

    def _set_up(self, server: int, up: bool) -> None:
        self.queue.mark(server, up)
        if self.metrics is not None:
            self.metrics.up.labels(self.model, self.servers[server].name).set(1 if up else 0)

    # -- health ----------------------------------------------------------------
    def _start_health(self) -> None:
        # One server alone is never marked down: with nowhere to fail over to,
        # its own breaker decides (and says so).
        if self._health is None and len(self.servers) > 1 \
                and any(s.probe is not None for s in self.servers):
            self._health = asyncio.create_task(self._health_loop(),
                                               name=f"model-health-{self.model}")

    async def check(self) -> None:
        """Probe every server once and mark it (the health loop's step)."""
        # A server streaming to us is alive: its calls' own failures tell,
        # and a busy server (llama.cpp's takes one call at a time) may be
        # slow to answer a probe.
        busy = [n > 0 for n in self.queue.in_flight]
        results = await asyncio.gather(*(self._probe(s) for s in self.servers))
        busy = [b or n > 0 for b, n in zip(busy, self.queue.in_flight, strict=True)]
        results = [None if b else r for b, r in zip(busy, results, strict=True)]
        changed = False
        for i, up in enumerate(results):
            if up is not None and up != self.queue.healthy[i]:
                log.info("model %s: server %s is %s", self.model, self.servers[i].name,
                         "up" if up else "down")
                self._set_up(i, up)
                changed = True
        if changed:
            self._pump()

    async def _probe(self, server: ModelServer) -> bool | None:
        if server.probe is None:
            return None
        try:
            return await asyncio.wait_for(server.probe(),
                                          max(0.5, self.config.health_interval_s))
        except Exception:
            return False

    async def _health_loop(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("model %s: health check failed", self.model)
            await asyncio.sleep(self.config.health_interval_s)

    async def close(self) -> None:
        if self._health is not None:
            self._health.cancel()
            await asyncio.gather(self._health, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
        for s in self.servers:
            await s.backend.close()
