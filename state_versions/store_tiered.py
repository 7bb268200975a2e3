"""The two-tier state store: Redis hot, PostgreSQL durable.

Theory of operation
-------------------
``TieredStateStore(hot, durable)`` is a ``StateStore`` whose every read and
write is answered by the hot tier (``RedisStateStore``: one Lua script per
operation, versions counted there). An applied change is then *offered* to a
``WriteBehind``: a bounded in-process queue drained by one task, which
records the changes in PostgreSQL in batches (``PostgresStateStore.record``:
history rows plus the latest value per section, one statement per batch).

- **Nothing durable sits on the fan-out path.** ``offer`` is synchronous and
  O(1): it appends to the queue or, when ``max_pending`` changes are already
  waiting (PostgreSQL down or slow), drops the change, counts it in
  ``dropped`` and logs (at most once per ``LOG_EVERY_S``). ``apply`` never
  waits for PostgreSQL.
- **The drain task** takes up to ``batch`` changes at a time, in order. A
  batch that fails because the database is unavailable is retried (with a
  growing pause, up to ``MAX_RETRY_S``) and keeps its place; new changes keep
  queueing behind it up to the bound. A batch the database refuses for
  another reason is dropped and counted, so one bad row cannot stop the
  queue. Values that are not JSON (msgpack bytes, say) are skipped and
  counted in ``skipped``.
- **Redis lost its data.** The hot tier notices (its per-slot epoch marker
  is gone), renews the epoch, and then meets rooms it no longer has: for
  each, it calls this store's loader, which first lets the local queue drain
  (for at most ``LOAD_DRAIN_S``) and then reads the room's latest values
  from PostgreSQL. The room is written back into Redis with those values and
  partials, and with ``total = sum(partials)``.

The epoch, and what a client is told after Redis lost data
----------------------------------------------------------
The epoch is the hot tier's (see ``store_redis``): it changes when Redis lost
data. A client that comes back with versions from before is told the new
epoch and gets every section again; it is never told "you are up to date"
on the strength of versions counted in another life. What it gets is what
PostgreSQL had, which is every change written behind before the loss:

- changes still queued in *this* process are written before its reload;
- changes dropped by an overflow, or still queued in another process (or
  lost with a crashed process), are missing: their sections come back at an
  older value and partial, or not at all. The new epoch is what makes that
  honest: nobody compares the new versions with the old ones.
- A late batch from another process's queue, arriving after a reload, is
  recorded only where it moves things forward: a history row for a total
  not written yet, a section whose stored partial is lower. A reloaded room
  keeps PostgreSQL's partials, so its next changes always move its sections
  forward there. But after a double fault (changes missing from PostgreSQL,
  then Redis lost) the reloaded total (the sum of the partials) can be
  below totals the history already holds: the history keeps the first row
  for such a total (of the old epoch), and the new epoch's change at that
  total is in Redis and in the section's latest value, not in the history.
  Redis, the hot tier, is the truth for the current epoch.

Time to recovery: the first operation on each room after the loss pays one
PostgreSQL read; rooms nobody touches are not reloaded.

Idle rooms leave Redis (``idle_ttl``, ``--room-idle-seconds``): after each
recorded batch, every room of it whose Redis total is still the batch's
last total for it (nothing newer waits to be recorded) gets an expiry of
``idle_ttl``; any apply takes the expiry away again. A batch with a skipped
(non-JSON) change sets no expiry, since that value is only in Redis. An
expired room reloads from PostgreSQL on its next operation, with the same
values and partials: to a client, nothing happened. So Redis holds the rooms
in use, PostgreSQL all of them. Reads of a room neither has write nothing
(``store_redis``: reads never allocate).

Availability: a room Redis has keeps working while PostgreSQL is down (the
write-behind queues, then drops and counts). A room Redis does NOT have (a
new room, or one lost with Redis) cannot be told apart from a room whose
state is only in PostgreSQL, so its first operation needs PostgreSQL: during
a PostgreSQL outage it answers ``Unavailable`` (retry) rather than start the
room from nothing and later contradict the durable history. Once looked up,
a room PostgreSQL does not know is remembered as empty in Redis for a while
(``store_redis.EMPTY_TTL_S``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from state_versions.store_postgres import PostgresStateStore
from state_versions.store_redis import RedisStateStore
from state_versions.versions import Change, Section, Snapshot
from wire.errors import Unavailable

if TYPE_CHECKING:
    from state_versions.store import StateStore

log = logging.getLogger(__name__)

# A reload waits this long for the local queue to reach PostgreSQL first.
LOAD_DRAIN_S = 2.0
# Retry pauses of a batch while the database is down: doubling up to this.
MAX_RETRY_S = 2.0
# Overflow and failure logs: at most one line per this many seconds.
LOG_EVERY_S = 10.0

Sink = Callable[[Sequence[Change]], Awaitable[tuple[int, int]]]


class WriteBehind:
    """A bounded queue of applied changes and the one task that drains it
    into ``sink`` (see the module docstring). The task starts with the
    first ``offer`` (which runs inside the event loop)."""

    __slots__ = ("_idle", "_inflight", "_last_log", "_queue", "_sink", "_task", "_wake",
                 "batch", "dropped", "failures", "max_pending", "skipped", "written")

    def __init__(self, sink: Sink, *, max_pending: int = 10_000, batch: int = 500) -> None:
        if max_pending < 1 or batch < 1:
            raise ValueError("max_pending and batch must be positive")
        self._sink = sink
        self.max_pending = max_pending
        self.batch = batch
        self._queue: collections.deque[Change] = collections.deque()
        self._inflight = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._last_log = -LOG_EVERY_S
        # Counters (the composition root exports them as metrics).
        self.written = 0  # changes recorded
        self.dropped = 0  # changes not recorded: overflow or a refused batch
        self.skipped = 0  # changes whose value the durable tier cannot hold
        self.failures = 0  # failed attempts to write a batch

    @property
    def pending(self) -> int:
        """Changes offered and not yet recorded (queued or being written)."""
        return len(self._queue) + self._inflight

    def offer(self, change: Change) -> bool:
        """Queue ``change``; False when the queue is full (dropped, counted).
        Never waits."""
        if len(self._queue) >= self.max_pending:
            self.dropped += 1
            self._log_throttled("write-behind queue full (%d): dropped a change of room %r "
                                "(%d dropped so far)", self.max_pending, change.room,
                                self.dropped)
            return False
        self._queue.append(change)
        self._idle.clear()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain(),
                                                                name="state-write-behind")
        return True

    async def flush(self, timeout: float) -> bool:
        """Wait until everything offered so far is recorded (or given up);
        False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Flush (for at most ``timeout``), then stop the task; what is still
        queued is counted as dropped."""
        if self._task is None:
            return
        await self.flush(timeout)
        task, self._task = self._task, None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        lost = len(self._queue) + self._inflight
        if lost:
            self.dropped += lost
            log.warning("write-behind closed with %d changes not recorded", lost)
        self._queue.clear()
        self._inflight = 0
        self._idle.set()

    async def _drain(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
            self._inflight = len(batch)
            await self._write(batch)
            self._inflight = 0

    async def _write(self, batch: list[Change]) -> None:
        pause = 0.05
        while True:
            try:
                written, skipped = await self._sink(batch)
            except Unavailable as err:
                # The database is down: keep the batch, try again.
                self.failures += 1
                self._log_throttled("write-behind: %s; %d changes waiting", err.message,
                                    self.pending)
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_RETRY_S)
                continue
            except Exception:
                self.failures += 1
                self.dropped += len(batch)
                log.exception("write-behind: a batch of %d changes was refused; dropped",
                              len(batch))
                return
            self.written += len(batch) - skipped
            self.skipped += skipped
            if skipped:
                self._log_throttled("write-behind: %d values are not JSON; not recorded "
                                    "(%d so far)", skipped, self.skipped)
            del written  # rows already there (a repeated batch) are not an error
            return

    def _log_throttled(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            log.warning(msg, *args)


class TieredStateStore:
    """``StateStore``: Redis hot, PostgreSQL durable (see the module
    docstring). It installs itself as the hot store's loader."""

    def __init__(self, hot: RedisStateStore, durable: PostgresStateStore, *,
                 max_pending: int = 10_000, batch: int = 500,
                 idle_ttl: float | None = None) -> None:
        self.hot = hot
        self.durable = durable
        self.write_behind = WriteBehind(self._record, max_pending=max_pending, batch=batch)
        hot.loader = self._load
        if idle_ttl is not None:
            hot.idle_ttl = idle_ttl
        self.reloads = 0  # rooms reloaded from PostgreSQL (metrics, tests)

    @property
    def epoch(self) -> str:
        """The hot tier's epoch (it changes when Redis lost data)."""
        return self.hot.epoch

    @epoch.setter
    def epoch(self, value: str) -> None:
        # Only for the protocol's sake (its ``epoch`` is a plain attribute).
        self.hot.epoch = value

    async def _load(self, room: str) -> Snapshot | None:
        # What this process still has queued goes first, so the reload
        # misses as little as it can (bounded: a down database cannot stall
        # the hot tier for long; the read below then fails as Unavailable).
        if self.write_behind.pending:
            await self.write_behind.flush(LOAD_DRAIN_S)
        snap = await self.durable.snapshot(room)
        if not snap.sections:
            return None
        self.reloads += 1
        log.info("state of room %r reloaded from PostgreSQL at total %d", room, snap.total)
        return snap

    async def _record(self, batch: Sequence[Change]) -> tuple[int, int]:
        """The write-behind's sink: record in PostgreSQL, then let the
        batch's rooms expire from Redis where nothing newer is pending."""
        written, skipped = await self.durable.record(batch)
        if skipped == 0 and self.hot.idle_ttl is not None:
            last: dict[str, int] = {}
            for c in batch:
                last[c.room] = max(c.total, last.get(c.room, 0))
            try:
                await self.hot.expire_if_current(last)
            except Unavailable:
                pass  # the rooms stay in Redis: safe, only memory
        return written, skipped

    async def apply(self, room: str, section: str, value: Any,
                    expected: int | None = None) -> Change:
        change = await self.hot.apply(room, section, value, expected)
        self.write_behind.offer(change)
        return change

    async def versions(self, room: str) -> tuple[int, dict[str, int]]:
        return await self.hot.versions(room)

    async def changed_since(self, room: str,
                            known: Mapping[str, int]) -> tuple[int, list[Section]]:
        return await self.hot.changed_since(room, known)

    async def section(self, room: str, section: str) -> Section | None:
        return await self.hot.section(room, section)

    async def snapshot(self, room: str) -> Snapshot:
        return await self.hot.snapshot(room)

    async def close(self, timeout: float = 5.0) -> None:
        """Flush the write-behind (for at most ``timeout``) and stop it. The
        clients and pools are the caller's (``open_distributed_stores``
        closes them)."""
        await self.write_behind.close(timeout)


if TYPE_CHECKING:
    # mypy checks that the class keeps to the interface.
    def _is_a_state_store(store: TieredStateStore) -> StateStore:
        return store
