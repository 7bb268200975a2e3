"""The edge's writer: every write to a connection and every fan-out result
goes through here, so that what can go wrong on a write is counted and
logged in one place and never raises to the caller.

``deliver`` writes one encoded frame to one connection; ``reply`` a CONTROL
frame (answers, errors) built from a map, with ``internal`` instead when the
map cannot be encoded; ``account`` takes a fan-out's result (sent, shed,
closed, failed, frames that could not be built). A connection the budget
closed (4100) or whose transport raised (1011) is taken out of its rooms at
once (``drop``: the node's, through ``Rooms.remove``), so nobody else waits
on it. The node and its parts (edge/rooms.py, edge/peers.py, ...) get these
as bound methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge.fanout import Conn, FanoutResult, Verdict
from edge.metrics import Metrics
from plumbing.ratelog import RateLimitedLog
from wire.close_codes import CloseCode
from wire.encoded import Encoded
from wire.errors import InternalError, LiveroomError


class Writer:
    __slots__ = ("_drop", "_monotonic", "errlog", "metrics")

    def __init__(self, *, metrics: Metrics, errlog: RateLimitedLog,
                 monotonic: Callable[[], float], drop: Callable[[Conn], None]) -> None:
        self.metrics = metrics
        self.errlog = errlog
        self._monotonic = monotonic
        self._drop = drop

    def send_error(self, conn: Conn, err: LiveroomError) -> None:
        self.metrics.errors.labels(err.code).inc()
        self.reply(conn, err.to_frame())

    def reply(self, conn: Conn, obj: dict[str, Any]) -> None:
        """A CONTROL frame to one connection (replies, errors). One that
        cannot be encoded (the value rule at decode leaves no room for it)
        is answered with ``internal``, a frame of constants, instead."""
        now = self._monotonic()
        if not self.deliver(conn, Encoded(obj), now):
            self.metrics.errors.labels(InternalError.code).inc()
            self.deliver(conn, Encoded(InternalError().to_frame()), now)

    def deliver(self, conn: Conn, enc: Encoded, now: float) -> bool:
        """Write ``enc`` to one connection; False when it could not be
        framed (counted and logged here; nothing raises to the caller)."""
        try:
            verdict = conn.deliver(enc, now)
        except Exception as exc:
            self.fanout_error("reply", exc, "")
            return False
        if verdict is Verdict.CLOSED:
            self.slow_closed(conn)
        elif verdict is Verdict.FAILED:
            self.sink_failed(conn)
        return True

    def account(self, result: FanoutResult, t0: float) -> None:
        """A fan-out's result, ``t0`` (monotonic) when it began."""
        metrics = self.metrics
        metrics.fanout_seconds.observe(self._monotonic() - t0)
        metrics.frames_out.inc(result.sent)
        if result.dropped:
            metrics.dropped.labels("backpressure").inc(result.dropped)
        for conn in result.closed:
            self.slow_closed(conn)
        for conn in result.failed:
            self.sink_failed(conn)
        for err in result.errors:
            self.fanout_error(err.reason, err.exc, err.room)

    def sink_failed(self, conn: Conn) -> None:
        """A connection whose transport raised on write: closed (1011) by
        ``Conn.deliver``, out of its rooms here; nobody else is affected."""
        self.metrics.fanout_errors.labels("sink").inc()
        self.metrics.closes.labels(str(int(CloseCode.INTERNAL_ERROR))).inc()
        self._drop(conn)
        exc = conn.failure
        self.errlog.exception(f"sink:{type(exc).__name__}",
                              "writing to connection %d failed; closed it", conn.cid, exc=exc)

    def fanout_error(self, reason: str, exc: Exception, room: str) -> None:
        """A message that could not be framed: counted, logged (rate-limited)."""
        self.metrics.fanout_errors.labels(reason).inc()
        self.errlog.exception(f"fanout:{reason}:{type(exc).__name__}",
                              "a %s frame could not be built (room %r); dropped", reason,
                              room[:64], exc=exc)

    def slow_closed(self, conn: Conn) -> None:
        """A connection the budget closed: out of its rooms at once (its
        transport's end does the rest of the cleanup)."""
        self.metrics.closes.labels(str(int(CloseCode.SLOW_CONSUMER))).inc()
        self.metrics.dropped.labels("slow_consumer").inc()
        self._drop(conn)

    def close(self, conn: Conn, code: int, reason: str) -> None:
        """Close ``conn`` with ``code`` (counted), if it is not closed."""
        if not conn.closed:
            self.metrics.closes.labels(str(int(code))).inc()
            conn.close(code, reason)

    def disconnect(self, conn: Conn, code: int, reason: str) -> None:
        """Close ``conn`` and take it out of its rooms at once (moderation)."""
        self.close(conn, code, reason)
        self._drop(conn)
