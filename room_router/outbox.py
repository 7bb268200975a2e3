"""The embedded deployment's events: a durable SQLite outbox and the
webhook dispatcher that empties it.

Theory of operation
-------------------
``emit`` (synchronous, from the hot path) stamps the event and appends it to
a memory buffer: no I/O on the caller. A writer task wakes when the buffer
is no longer empty, waits ``flush_interval`` (5 ms) for more, and inserts
everything buffered in ONE transaction on the SQLite thread
(storage/sqlite_thread.py), in emit order: the table's ``seq`` is that
order. A dispatcher task reads the oldest events (``ORDER BY seq``), cuts a
batch (room_router/webhooks.py ``cut_batch``), POSTs it until the backend
answers 2xx (``WebhookPoster.deliver``: retries with backoff), then deletes
exactly those rows, and goes on. One dispatcher, one batch in flight: the
backend sees the events in seq order, hence in order per room, none
skipped; a batch whose 2xx was lost is sent again (same ids).

Durability
----------
WAL with ``synchronous=NORMAL``: a committed insert survives a crash of the
process (SIGKILL included) but the last commits may be lost with the
machine (an OS crash or power loss before the next checkpoint). Events
still in the memory buffer (at most ``flush_interval`` old) are lost if the
process dies. FULL would make every 5 ms flush wait for an fsync; events
are a notification stream, the state itself is elsewhere, so NORMAL.

The bound
---------
At most ``max_events`` undelivered events (stored plus buffered; default
1,000,000, ``--outbox-max-events``). Past it, NEW events are refused
(dropped and counted, ``liveroom_events_dropped_total{reason="outbox_full"}``,
logged): dropping the oldest would delete events while the dispatcher is
sending them, and a backend would see a hole in the middle of the stream
instead of at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from room_router.events import Stamper
from room_router.webhooks import EventMetrics, WebhookPoster, cut_batch
from storage.sqlite_thread import SqliteThread, immediate

log = logging.getLogger("liveroom.events")

DEFAULT_MAX_EVENTS = 1_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    body BLOB NOT NULL
);
"""


class SqliteOutbox:
    """The ``EventSink`` of ``liveroom serve`` with ``--webhook-url``."""

    def __init__(self, path: Path, poster: WebhookPoster, metrics: EventMetrics, *,
                 max_events: int = DEFAULT_MAX_EVENTS, flush_interval: float = 0.005,
                 clock: Callable[[], float] = time.time) -> None:
        self._sql = SqliteThread(path, "outbox", _SCHEMA, synchronous="NORMAL")
        self._poster = poster
        self._metrics = metrics
        self._max_events = max_events
        self._flush_interval = flush_interval
        self._stamper = Stamper(clock)
        self._buffer: list[tuple[str, bytes]] = []
        self._stored = 0
        self._dirty = asyncio.Event()
        self._written = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._refusing = False

    # -- the sink ----------------------------------------------------------
    def emit(self, room: str, type: str, data: Mapping[str, Any]) -> None:
        try:
            if self._stored + len(self._buffer) >= self._max_events:
                self._refuse(room, type)
                return
            _, raw = self._stamper.stamp(room, type, data)
            self._buffer.append((room, raw))
            self._dirty.set()
            self._metrics.emitted.labels(type).inc()
            self._metrics.pending.inc()
            self._metrics.buffered.inc()
        except Exception:
            log.exception("an event of room %r could not be recorded", room[:64])

    def _refuse(self, room: str, type: str) -> None:
        self._metrics.dropped.labels("outbox_full").inc()
        if not self._refusing:
            self._refusing = True
            log.error("the event outbox holds %d undelivered events, its maximum: new events "
                      "are dropped until the backend takes some (first: %s of room %r)",
                      self._max_events, type, room[:64])

    # -- lifecycle -----------------------------------------------------------
    async def open(self) -> None:
        await self._sql.open()
        self._stored = await self._sql.run(
            lambda: int(self._sql.conn().execute("SELECT count(*) FROM outbox").fetchone()[0]))
        self._metrics.pending.set(self._stored + len(self._buffer))
        if self._stored:
            log.info("event outbox: %d undelivered events from before, sending", self._stored)
        if self._buffer:
            self._dirty.set()
        self._tasks = [asyncio.create_task(self._write_loop(), name="outbox-writer"),
                       asyncio.create_task(self._dispatch_loop(), name="outbox-dispatcher")]

    async def close(self) -> None:
        """Stop the dispatcher, write what is buffered, close the file."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        with contextlib.suppress(Exception):
            await self._flush()
        await self._poster.close()
        await self._sql.close()

    async def pending(self) -> int:
        """Undelivered events, stored and buffered."""
        return self._stored + len(self._buffer)

    # -- the writer ------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self._flush_interval)
            self._dirty.clear()
            try:
                await self._flush()
            except Exception:
                # The rows stay buffered (_flush puts them back): retried.
                log.exception("writing events to the outbox failed; retrying")
                self._dirty.set()
                await asyncio.sleep(1.0)

    async def _flush(self) -> None:
        rows, self._buffer = self._buffer, []
        if not rows:
            return
        try:
            await self._sql.run(self._insert_sync, rows)
        except BaseException:
            self._buffer = rows + self._buffer
            raise
        self._stored += len(rows)
        self._metrics.buffered.dec(len(rows))
        self._written.set()

    def _insert_sync(self, rows: list[tuple[str, bytes]]) -> None:
        db = self._sql.conn()
        with immediate(db):
            db.executemany("INSERT INTO outbox (room, body) VALUES (?, ?)", rows)

    # -- the dispatcher ----------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        opts = self._poster.options
        while True:
            self._written.clear()
            rows = await self._sql.run(self._oldest_sync, opts.batch_events)
            if not rows:
                await self._written.wait()
                continue
            n = cut_batch([len(body) for _, body in rows], opts.batch_events, opts.batch_bytes)
            batch = rows[:n]
            await self._poster.deliver([body for _, body in batch])
            await self._sql.run(self._delete_sync, batch[-1][0])
            self._stored -= n
            self._metrics.pending.dec(n)
            if self._refusing and self._stored + len(self._buffer) < self._max_events:
                self._refusing = False
                log.warning("the event outbox has room again")

    def _oldest_sync(self, limit: int) -> list[tuple[int, bytes]]:
        return [(int(seq), bytes(body)) for seq, body in self._sql.conn().execute(
            "SELECT seq, body FROM outbox ORDER BY seq LIMIT ?", (limit,))]

    def _delete_sync(self, upto: int) -> None:
        db = self._sql.conn()
        with immediate(db):
            db.execute("DELETE FROM outbox WHERE seq <= ?", (upto,))
