"""Events to the backend, composed (docs/BACKEND.md, "Events"): the SQLite
outbox of ``liveroom serve``, the JetStream publisher of ``liveroom edge
--events``, and the ``liveroom webhooks`` process that POSTs the stream to
the backend."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from liveroom.flags import add_event_arguments, env, event_options, urls
from liveroom.options import EventOptions
from room_router.events_jetstream import JetStreamDispatcher, JetStreamSink, StreamOptions
from room_router.outbox import SqliteOutbox
from room_router.webhooks import EventMetrics, WebhookOptions, WebhookPoster

log = logging.getLogger("liveroom.events")


def webhook_poster(opts: EventOptions, metrics: EventMetrics) -> WebhookPoster:
    assert opts.webhook_url is not None
    return WebhookPoster(WebhookOptions(
        url=opts.webhook_url, secret=opts.webhook_secret, batch_events=opts.batch_events,
        batch_bytes=opts.batch_bytes, timeout=opts.timeout), metrics)


def embedded_events(opts: EventOptions, path: Path,
                    registry: CollectorRegistry) -> SqliteOutbox | None:
    """The outbox at ``path`` when there is a webhook URL (else None: events
    off; nothing is recorded for a backend nobody named)."""
    if not opts.webhook_url:
        return None
    metrics = EventMetrics(registry)
    log.info("events: outbox %s -> %s", path, opts.webhook_url)
    return SqliteOutbox(path, webhook_poster(opts, metrics), metrics,
                        max_events=opts.outbox_max_events)


def stream_options(opts: EventOptions, prefix: str) -> StreamOptions:
    return StreamOptions(name=opts.stream, prefix=prefix, max_age=opts.stream_max_age,
                         max_bytes=opts.stream_max_bytes, replicas=opts.stream_replicas)


async def cluster_events(opts: EventOptions, nats: list[str], prefix: str, node_id: str,
                         registry: CollectorRegistry) -> JetStreamSink | None:
    """The JetStream publisher of an edge with ``--events`` (None without)."""
    if not opts.jetstream:
        return None
    if not nats:
        raise SystemExit("--events needs --nats (a NATS server with JetStream)")
    sink = await JetStreamSink.connect(nats, stream_options(opts, prefix),
                                       EventMetrics(registry), name=node_id,
                                       max_buffer=opts.buffer)
    log.info("events: publishing to JetStream stream %s", opts.stream)
    return sink


# -- liveroom webhooks -------------------------------------------------------
def add_webhooks_parser(sub: Any) -> None:
    p = sub.add_parser("webhooks", help="POST the cluster's events (JetStream) to the backend")
    p.add_argument("--nats", type=urls, default=urls(env("NATS", "")))
    p.add_argument("--subject-prefix", default=env("SUBJECT_PREFIX", "liveroom"))
    p.add_argument("--metrics-port", type=int, default=env("METRICS_PORT", "0"),
                   help="serve /metrics on this port (0: none)")
    p.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))
    add_event_arguments(p, webhook=True, jetstream=True)


async def run_webhooks(args: argparse.Namespace,
                       until_stopped: Callable[[], Awaitable[None]]) -> None:
    """``liveroom webhooks``: the stream's dispatcher until ``until_stopped``."""
    opts = event_options(args)
    if not args.nats or not opts.webhook_url:
        raise SystemExit("liveroom webhooks needs --nats and --webhook-url")
    registry = CollectorRegistry()
    if args.metrics_port:
        start_http_server(args.metrics_port, "127.0.0.1", registry)
    dispatcher = await JetStreamDispatcher.connect(
        args.nats, stream_options(opts, args.subject_prefix),
        webhook_poster(opts, EventMetrics(registry)), ack_wait=opts.ack_wait)
    log.info("webhooks running (stream %s -> %s)", opts.stream, opts.webhook_url)
    await until_stopped()
    await dispatcher.close()
