"""Signed, batched webhooks: how events reach the backend over HTTP.

One module for both dispatchers (the embedded SQLite outbox,
room_router/outbox.py, and the cluster's JetStream consumer,
room_router/events_jetstream.py): they read events in order, cut them into
batches (``cut_batch``), and hand each batch to ``WebhookPoster.deliver``,
which returns only once the backend answered 2xx. Then, and only then, the
dispatcher forgets the batch (deletes it from the outbox, acks it to
JetStream). So delivery is at least once, in order, never skipping.

The request
-----------
``POST <webhook url>`` with the body ``{"events": [<event>, ...]}`` (JSON)
and the header ``X-Liveroom-Signature: t=<unix seconds>,v1=<hex>`` where
``<hex>`` is HMAC-SHA256(secret, ``"<t>." + body``): the scheme Stripe
uses. The timestamp lets the backend refuse replays of an old request
(``verify`` takes a tolerance); ``v1`` names the scheme so that a second
one can be added while both are accepted.

Retries
-------
Anything but a 2xx is retried, the same batch, after an exponential backoff
with full jitter (``Backoff``: 0.5 s doubling to a cap of 30 s, a random
share of it): timeouts, connection refused, 5xx, 408, 429. A 4xx other
than 408/429 says the backend refuses the request (a wrong secret, a bug):
it is retried too, since dropping it would lose events, but logged at
ERROR every time, for an operator to fix the backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger("liveroom.webhooks")

SIGNATURE_HEADER = "X-Liveroom-Signature"
# A backend should refuse a request signed longer ago than this.
DEFAULT_TOLERANCE_S = 300.0


def signature(secret: str, t: int, body: bytes) -> str:
    """The ``X-Liveroom-Signature`` value of ``body`` signed at unix time ``t``."""
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, header: str, body: bytes, now: float,
           tolerance: float = DEFAULT_TOLERANCE_S) -> bool:
    """The backend's check (docs/BACKEND.md): the header parses, one of its
    ``v1`` signatures is the body's, and ``t`` is within ``tolerance``
    seconds of ``now``. Constant-time comparison."""
    t: int | None = None
    sigs: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            t = int(value)
        elif key == "v1":
            sigs.append(value)
    if t is None or not sigs or abs(now - t) > tolerance:
        return False
    expected = signature(secret, t, body).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, s) for s in sigs)


def batch_body(events: Sequence[bytes]) -> bytes:
    """``{"events": [...]}`` from the events' stored JSON bytes (no re-encoding)."""
    return b'{"events":[' + b",".join(events) + b"]}"


def cut_batch(sizes: Sequence[int], max_events: int, max_bytes: int) -> int:
    """How many of the leading events (of these encoded sizes) go in one
    batch: at most ``max_events`` and ``max_bytes`` of events, but always at
    least one (an event bigger than ``max_bytes`` goes alone)."""
    total = 0
    for n, size in enumerate(sizes[:max_events]):
        total += size + 1
        if total > max_bytes and n > 0:
            return n
    return min(len(sizes), max_events)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt ``n`` (1, 2, ...) waits
    a random share of ``min(cap, base * 2**(n-1))``, at least ``base/2``."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, rand: float) -> float:
        """``rand`` in [0, 1) (the caller's randomness: pure and testable)."""
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt - 1, 32))
        return max(self.base / 2, ceiling * rand)


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    url: str
    secret: str
    # Per batch: events and bytes of events (docs/BACKEND.md).
    batch_events: int = 100
    batch_bytes: int = 256 * 1024
    # Seconds for one POST, connect to last byte of the answer.
    timeout: float = 10.0
    backoff: Backoff = Backoff()


class EventMetrics:
    """The events' metrics, for both sinks and both dispatchers."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.emitted = Counter("liveroom_events_emitted_total", "Events emitted", ["type"],
                               registry=r)
        self.delivered = Counter("liveroom_events_delivered_total",
                                 "Events delivered (webhook answered 2xx, or published to "
                                 "JetStream)", ["to"], registry=r)
        self.pending = Gauge("liveroom_events_pending",
                             "Events recorded and not yet delivered", registry=r)
        self.buffered = Gauge("liveroom_events_buffered",
                              "Events in memory only, not yet durable (outbox: not yet "
                              "written; JetStream: not yet in the stream)", registry=r)
        self.retries = Counter("liveroom_events_retries_total",
                               "Deliveries retried (webhook POSTs, JetStream publishes)",
                               ["to"], registry=r)
        self.dropped = Counter("liveroom_events_dropped_total",
                               "Events lost: the outbox or the publish buffer was full",
                               ["reason"], registry=r)
        self.webhook_seconds = Histogram("liveroom_webhook_seconds",
                                         "Seconds per webhook POST (every attempt)",
                                         registry=r)


class WebhookPoster:
    """POSTs batches to the backend until it takes them (see the module doc)."""

    def __init__(self, options: WebhookOptions, metrics: EventMetrics, *,
                 clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self.options = options
        self._metrics = metrics
        self._clock = clock
        self._rand = rand
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.options.timeout))
        return self._session

    async def post(self, events: Sequence[bytes]) -> str | None:
        """One attempt; None on a 2xx, else why not (for the log)."""
        body = batch_body(events)
        headers = {"Content-Type": "application/json",
                   SIGNATURE_HEADER: signature(self.options.secret, int(self._clock()), body)}
        t0 = time.monotonic()
        try:
            async with self._client().post(self.options.url, data=body,
                                           headers=headers) as resp:
                await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            self._metrics.webhook_seconds.observe(time.monotonic() - t0)
        if 200 <= status < 300:
            return None
        if 400 <= status < 500 and status not in (408, 429):
            log.error("the backend refused a webhook batch with HTTP %d (check the URL, the "
                      "secret and the backend's logs); retrying: events are never dropped",
                      status)
        return f"HTTP {status}"

    async def deliver(self, events: Sequence[bytes],
                      on_retry: Callable[[], Awaitable[None]] | None = None) -> None:
        """POST ``events`` until a 2xx; ``on_retry`` runs before each retry
        (the JetStream consumer keeps its messages' ack deadline alive)."""
        attempt = 0
        while True:
            why = await self.post(events)
            if why is None:
                self._metrics.delivered.labels("webhook").inc(len(events))
                return
            attempt += 1
            self._metrics.retries.labels("webhook").inc()
            wait = self.options.backoff.delay(attempt, self._rand())
            log.warning("webhook batch of %d events not delivered (%s); retry %d in %.1f s",
                        len(events), why, attempt, wait)
            await asyncio.sleep(wait)
            if on_retry is not None:
                await on_retry()
