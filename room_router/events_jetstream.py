"""The cluster's events: published to a NATS JetStream stream, consumed by
the webhook dispatcher (or by the backend directly).

Theory of operation
-------------------
Publishing (``JetStreamSink``, one per edge): ``emit`` stamps the event and
appends it to a bounded FIFO (a deque); one pump task publishes the FIFO's
head to ``<prefix>.events.<room token>`` (the room id encoded as one subject
token, room_router/bus_nats.py) with the header ``Nats-Msg-Id: <event id>``,
awaits JetStream's ack, and only then takes the next. Strictly one at a
time: the stream holds a publisher's events in emit order, hence in order
per room. On any failure (no server, no stream leader, a timeout) the head
is published again after a backoff; JetStream drops a republish whose first
copy did land (the stream's duplicate window de-duplicates by
``Nats-Msg-Id``), so a lost ack costs no duplicate.

The FIFO holds at most ``max_buffer`` events (default 100,000,
``--events-buffer``): while JetStream is unreachable for longer than that
takes to fill, NEW events are dropped and counted
(``liveroom_events_dropped_total{reason="publish_buffer_full"}``). This is
the one place the cluster can lose an event; once in the stream, an event
stays until it is consumed or ``max_age`` passes.

The stream (``ensure_stream``): ``LIVEROOM_EVENTS`` by default, subjects
``<prefix>.events.>``, file storage, ``max_age`` 7 days, ``max_bytes``
10 GiB (oldest discarded past either), a duplicate window of 10 minutes.
Created at start, or updated to this config.

Consuming (``JetStreamDispatcher``, the ``liveroom webhooks`` process): one
durable pull consumer (``liveroom-webhooks``) fetches up to a batch of
messages in stream order, POSTs them as webhooks (room_router/webhooks.py:
the same signed batches as the embedded outbox), and acks them after the
2xx. While a POST is retried, the messages in hand get ``in_progress`` so
that JetStream does not redeliver them behind our back. The consumer lets
one batch be unacknowledged at a time (``max_ack_pending`` = the batch
size): when a dispatcher dies holding a batch, its successor receives
nothing until ``ack_wait`` (``--webhook-ack-wait``, 60 s) has passed and
that batch is redelivered, first; so order holds across restarts, at the
cost of up to ``ack_wait`` of delay after a crash. Run ONE dispatcher per
stream: two would share the consumer and deliver out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from room_router.bus_nats import wire_subject
from room_router.events import Stamper
from room_router.webhooks import Backoff, EventMetrics, WebhookPoster, cut_batch

log = logging.getLogger("liveroom.events")

DEFAULT_STREAM = "LIVEROOM_EVENTS"
DEFAULT_DURABLE = "liveroom-webhooks"
DEFAULT_MAX_BUFFER = 100_000
PUBLISH_BACKOFF = Backoff(base=0.2, cap=5.0)


@dataclass(frozen=True, slots=True)
class StreamOptions:
    name: str = DEFAULT_STREAM
    prefix: str = "liveroom"
    max_age: float = 7 * 24 * 3600.0
    max_bytes: int = 10 * 1024**3
    duplicate_window: float = 600.0
    # Servers that keep a copy (1 for a single server; 3 in a 3-node cluster).
    replicas: int = 1

    @property
    def subjects(self) -> str:
        return f"{self.prefix}.events.>" if self.prefix else "events.>"

    def subject(self, room: str) -> str:
        return wire_subject(f"events.{room}", self.prefix)


async def ensure_stream(js: JetStreamContext, opts: StreamOptions) -> None:
    """Create the stream, or bring an existing one to ``opts``."""
    config = api.StreamConfig(
        name=opts.name, subjects=[opts.subjects], storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS, discard=api.DiscardPolicy.OLD,
        max_age=opts.max_age, max_bytes=opts.max_bytes,
        duplicate_window=opts.duplicate_window, num_replicas=opts.replicas)
    try:
        await js.stream_info(opts.name)
    except NotFoundError:
        await js.add_stream(config)
        log.info("events: created JetStream stream %s (%s)", opts.name, opts.subjects)
        return
    await js.update_stream(config)


async def connect(urls: list[str], name: str) -> NatsClient:
    """A NATS connection that keeps reconnecting (events must not give up)."""
    return await nats.connect(servers=urls, name=name, max_reconnect_attempts=-1,
                              reconnect_time_wait=0.5, connect_timeout=2.0)


class JetStreamSink:
    """The ``EventSink`` of an edge with ``--events`` (see the module doc)."""

    def __init__(self, nc: NatsClient, stream: StreamOptions, metrics: EventMetrics, *,
                 max_buffer: int = DEFAULT_MAX_BUFFER, publish_timeout: float = 5.0,
                 backoff: Backoff = PUBLISH_BACKOFF,
                 clock: Callable[[], float] = time.time) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=publish_timeout)
        self._stream = stream
        self._metrics = metrics
        self._max_buffer = max_buffer
        self._timeout = publish_timeout
        self._backoff = backoff
        self._stamper = Stamper(clock)
        self._queue: deque[tuple[str, str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._refusing = False

    @classmethod
    async def connect(cls, urls: list[str], stream: StreamOptions, metrics: EventMetrics,
                      *, name: str, **options: Any) -> JetStreamSink:
        nc = await connect(urls, f"{name}-events")
        try:
            await ensure_stream(nc.jetstream(), stream)
        except BaseException:
            await nc.close()
            raise
        sink = cls(nc, stream, metrics, **options)
        sink.start()
        return sink

    def emit(self, room: str, type: str, data: Mapping[str, Any]) -> None:
        try:
            if len(self._queue) >= self._max_buffer:
                self._metrics.dropped.labels("publish_buffer_full").inc()
                if not self._refusing:
                    self._refusing = True
                    log.error("%d events wait for JetStream, the maximum: new events are "
                              "DROPPED until it is reachable again", self._max_buffer)
                return
            event_id, raw = self._stamper.stamp(room, type, data)
            self._queue.append((self._stream.subject(room), event_id, raw))
            self._metrics.emitted.labels(type).inc()
            self._metrics.pending.inc()
            self._metrics.buffered.inc()
            self._wake.set()
        except Exception:
            log.exception("an event of room %r could not be recorded", room[:64])

    def start(self) -> None:
        self._task = asyncio.create_task(self._pump(), name="events-jetstream")

    @property
    def buffered(self) -> int:
        return len(self._queue)

    async def _pump(self) -> None:
        attempt = 0
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            subject, event_id, raw = self._queue[0]
            try:
                await self._js.publish(subject, raw, timeout=self._timeout,
                                       headers={"Nats-Msg-Id": event_id})
            except Exception as exc:
                attempt += 1
                self._metrics.retries.labels("jetstream").inc()
                wait = self._backoff.delay(attempt, random.random())
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("publishing events to JetStream failed (%s: %s); %d waiting, "
                                "retrying", type(exc).__name__, exc, len(self._queue))
                await asyncio.sleep(wait)
                continue
            attempt = 0
            self._queue.popleft()
            self._refusing = False
            self._metrics.delivered.labels("jetstream").inc()
            self._metrics.pending.dec()
            self._metrics.buffered.dec()

    async def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (at most ``timeout`` seconds), then close."""
        deadline = time.monotonic() + timeout
        while self._queue and time.monotonic() < deadline and self._task is not None \
                and not self._task.done():
            await asyncio.sleep(0.01)
        if self._queue:
            log.warning("closing with %d events not published to JetStream", len(self._queue))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._nc.close()


class JetStreamDispatcher:
    """Webhooks from the stream: one durable pull consumer, in order."""

    def __init__(self, nc: NatsClient, stream: StreamOptions, poster: WebhookPoster, *,
                 durable: str = DEFAULT_DURABLE, ack_wait: float = 60.0) -> None:
        self._nc = nc
        self._stream = stream
        self._poster = poster
        self._durable = durable
        self._ack_wait = ack_wait
        self._task: asyncio.Task[None] | None = None
        # The stream sequence of the next event to deliver, and since when
        # a gap before it has been waited for (see _in_order).
        self._next = 1
        self._gap_since: float | None = None

    @classmethod
    async def connect(cls, urls: list[str], stream: StreamOptions, poster: WebhookPoster,
                      **options: Any) -> JetStreamDispatcher:
        nc = await connect(urls, "liveroom-webhooks")
        try:
            await ensure_stream(nc.jetstream(), stream)
        except BaseException:
            await nc.close()
            raise
        dispatcher = cls(nc, stream, poster, **options)
        dispatcher._task = asyncio.create_task(dispatcher._run(), name="webhooks")
        return dispatcher

    async def _run(self) -> None:
        js = self._nc.jetstream()
        batch = self._poster.options.batch_events
        sub = await js.pull_subscribe(
            self._stream.subjects, durable=self._durable, stream=self._stream.name,
            config=api.ConsumerConfig(
                ack_policy=api.AckPolicy.EXPLICIT, deliver_policy=api.DeliverPolicy.ALL,
                # One batch unacknowledged at most: after a crash of the
                # dispatcher, the next one gets the unacknowledged batch
                # again (after ack_wait) BEFORE anything newer: order holds.
                ack_wait=self._ack_wait, max_ack_pending=batch))
        info = await sub.consumer_info()
        state = (await js.stream_info(self._stream.name)).state
        floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
        self._next = max(floor + 1, state.first_seq)
        log.info("webhooks: consuming %s as %r from %d, posting to %s", self._stream.name,
                 self._durable, self._next, self._poster.options.url)
        while True:
            try:
                msgs = await sub.fetch(batch, timeout=1.0)
            except (TimeoutError, NatsTimeoutError):
                continue
            except Exception as exc:
                log.warning("fetching events from JetStream failed (%s: %s); retrying",
                            type(exc).__name__, exc)
                await asyncio.sleep(1.0)
                continue
            ready = await self._in_order(msgs, time.monotonic())
            if ready:
                await self._deliver(ready)
                self._next = ready[-1].metadata.sequence.stream + 1

    async def _in_order(self, msgs: list[Msg], now: float) -> list[Msg]:
        """The leading messages that continue the stream where the last
        delivered batch ended. One already delivered (a redelivery after a
        lost ack) is acked and skipped; past a gap (a message delivered to a
        fetch that gave up, redelivered only after ack_wait) the rest is
        left unacknowledged, to come again after the missing one. A gap that
        outlasts 3 ack_waits (messages the stream's limits discarded) is
        stepped over, logged."""
        ready: list[Msg] = []
        expect = self._next
        for m in sorted(msgs, key=lambda m: m.metadata.sequence.stream):
            seq = m.metadata.sequence.stream
            if seq < expect:
                with contextlib.suppress(Exception):
                    await m.ack()
                continue
            if seq > expect:
                if ready:
                    break
                if self._gap_since is None:
                    self._gap_since = now
                if now - self._gap_since < 3 * self._ack_wait:
                    break
                log.warning("events %d..%d are no longer in the stream; going on from %d",
                            expect, seq - 1, seq)
            self._gap_since = None
            ready.append(m)
            expect = seq + 1
        return ready

    async def _deliver(self, msgs: list[Msg]) -> None:
        """POST ``msgs`` in order (as many batches as the byte bound cuts),
        acking each batch after its 2xx."""
        opts = self._poster.options
        while msgs:
            n = cut_batch([len(m.data) for m in msgs], opts.batch_events, opts.batch_bytes)
            part, msgs = msgs[:n], msgs[n:]
            held = part + msgs

            async def keep_alive(held: list[Msg] = held) -> None:
                for m in held:
                    with contextlib.suppress(Exception):
                        await m.in_progress()

            await self._poster.deliver([m.data for m in part], on_retry=keep_alive)
            for m in part:
                with contextlib.suppress(Exception):
                    await m.ack()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._poster.close()
        await self._nc.close()
