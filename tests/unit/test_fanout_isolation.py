"""Failure isolation in the fan-out: what goes wrong while one room is
written (a frame that cannot be built, a sink that raises) affects that
room's frame, or that one connection, only; every other room delivers and
no room is left queued (issue 12, item 1)."""

from __future__ import annotations

import json
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.fanout import Budget, Conn, FanoutResult, Hub, Verdict
from tests.unit.test_fanout import FakeSink
from tests.unit.test_protocol import parse_ws_frame
from wire.close_codes import CloseCode
from wire.codecs import JSON, MSGPACK
from wire.encoded import Encoded
from wire.frames import Priority

WINDOW = 0.005


class PoisonedMessage(Encoded):
    """A message whose encoding fails, as a RecursionError in the JSON
    encoder did (issue 12, item 1)."""

    __slots__ = ()

    def payload(self, variant: str) -> bytes:
        raise RecursionError("maximum recursion depth exceeded while encoding a JSON object")

    def frame(self, variant: str) -> bytes:
        return self.payload(variant)


class RaisingSink(FakeSink):
    def __init__(self, where: str = "write") -> None:
        super().__init__()
        self.where = where

    def write(self, data: bytes) -> None:
        if self.where == "write":
            raise ConnectionResetError("transport gone")
        super().write(data)

    def buffered(self) -> int:
        if self.where == "buffered":
            raise OSError("transport gone")
        return super().buffered()

    def close(self, code: int, reason: str) -> None:
        super().close(code, reason)
        if self.where in ("write", "close"):
            raise RuntimeError("cannot even close")


def texts(sink: FakeSink, variant: str) -> list[Any]:
    """Every message ``sink`` received, batches unpacked."""
    out: list[Any] = []
    for data in sink.written:
        _, payload = parse_ws_frame(data)
        obj = msgpack.unpackb(payload, raw=False) if variant == MSGPACK else json.loads(payload)
        out.extend(obj["frames"] if obj["type"] == "batch" else [obj])
    return [m["n"] for m in out]


def member(hub: Hub, room: str, cid: int, variant: str, sink: FakeSink | None = None
           ) -> tuple[Conn, FakeSink]:
    sink = sink or FakeSink()
    conn = Conn(cid, sink, Budget())
    conn.variant = variant
    hub.join(conn, room)
    return conn, sink


def msg(n: int) -> Encoded:
    return Encoded({"type": "action", "n": n}, Priority.COMMENT)


def test_a_poisoned_frame_in_one_room_of_many_affects_that_room_only() -> None:
    hub = Hub(WINDOW)
    rooms = [f"r{i}" for i in range(20)]
    sinks = {room: [member(hub, room, i * 10 + k, v)
                    for k, v in enumerate((MSGPACK, JSON, MSGPACK))]
             for i, room in enumerate(rooms)}
    bad = "r7"
    # A first message in every room goes out at once; the rest wait for the tick.
    for room in rooms:
        assert isinstance(hub.offer(room, msg(1), 0.0), FanoutResult)
    for room in rooms:
        hub.offer(room, msg(2), 0.001)
        if room == bad:
            hub.offer(room, PoisonedMessage({"type": "action", "n": -1}), 0.001)
        hub.offer(room, msg(3), 0.002)
    result = hub.flush(0.006)
    assert [(e.room, e.reason, type(e.exc)) for e in result.errors] == \
        [(bad, "encode", RecursionError)]
    for room in rooms:
        for conn, sink in sinks[room]:
            got = texts(sink, conn.variant)
            assert got[0] == 1
            if room != bad:
                assert got == [1, 2, 3], (room, got)
            else:
                assert got == [1]  # this tick's frame is lost, nothing else
    # Nothing stays queued: every room delivers its next message, the
    # poisoned one too.
    assert not any(local.queued or local.pending for local in hub.rooms.values())
    assert hub._dirty == []
    for room in rooms:
        assert isinstance(hub.offer(room, msg(4), 1.0), FanoutResult)
        for conn, sink in sinks[room]:
            assert texts(sink, conn.variant)[-1] == 4


def test_a_poisoned_frame_written_at_once_or_broadcast_is_reported_not_raised() -> None:
    hub = Hub(WINDOW)
    _, sink = member(hub, "r", 1, JSON)
    result = hub.offer("r", PoisonedMessage({"type": "action", "n": 0}), 0.0)
    assert isinstance(result, FanoutResult) and len(result.errors) == 1
    result = hub.broadcast("r", PoisonedMessage({"type": "action", "n": 0}), 1.0)
    assert len(result.errors) == 1
    assert isinstance(hub.offer("r", msg(5), 2.0), FanoutResult)
    assert texts(sink, JSON) == [5]


def test_a_raising_sink_closes_that_connection_only() -> None:
    hub = Hub(WINDOW)
    for where in ("write", "buffered"):
        room = f"room-{where}"
        healthy = [member(hub, room, k, MSGPACK) for k in range(3)]
        broken, _ = member(hub, room, 99, MSGPACK, RaisingSink(where))
        healthy += [member(hub, room, k, JSON) for k in range(3, 6)]
        result = hub.broadcast(room, msg(1), 0.0)
        assert result.failed == [broken] and result.sent == 6 and not result.errors
        assert broken.closed and broken.failure is not None
        assert broken.sink.closed == (CloseCode.INTERNAL_ERROR, "internal error")  # type: ignore[attr-defined]
        for conn, sink in healthy:
            assert texts(sink, conn.variant) == [1]
        # Closed: skipped from then on (the node drops it from its rooms).
        assert broken.deliver(msg(2), 1.0) is Verdict.DROPPED


def test_a_sink_that_cannot_close_is_still_closed() -> None:
    budget = Budget(bytes=100, slow_grace=1.0, hard_factor=4)
    sink = RaisingSink("close")
    conn = Conn(1, sink, budget)
    sink.pending = 1000  # over the hard cap: a slow-consumer close
    assert conn.deliver(msg(1), 0.0) is Verdict.CLOSED
    assert conn.closed and isinstance(conn.failure, RuntimeError)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 9), st.booleans(), st.booleans()), max_size=60))
def test_no_room_is_ever_left_queued(plan: list[tuple[int, bool, bool]]) -> None:
    """Any mix of good and poisoned messages, deferred or not, over ten
    rooms: after the flushes due, nothing waits, and each room's next
    message is written at once."""
    hub = Hub(WINDOW, defer_window=0.01)
    sinks = {r: member(hub, f"r{r}", r, JSON if r % 2 else MSGPACK)[1] for r in range(10)}
    now = 0.0
    for i, (r, poisoned, defer) in enumerate(plan):
        now += 0.0005
        enc = PoisonedMessage({"type": "action", "n": i}) if poisoned else msg(i)
        hub.offer(f"r{r}", enc, now, defer=defer)
    for t in (now + WINDOW, now + 0.02):
        hub.flush(t)
    assert not any(local.queued or local.pending for local in hub.rooms.values())
    for r, sink in sinks.items():
        before = len(sink.written)
        assert isinstance(hub.offer(f"r{r}", msg(10_000), now + 1.0), FanoutResult)
        assert len(sink.written) == before + 1
