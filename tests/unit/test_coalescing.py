"""Adaptive per-room coalescing and batch frames, with no event loop."""

from __future__ import annotations

import json

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from edge.batch import Batch
from edge.fanout import Budget, Conn, FanoutResult, Hub
from tests.unit.test_fanout import FakeSink
from tests.unit.test_protocol import parse_ws_frame
from wire.codecs import JSON, MSGPACK
from wire.encoded import Encoded
from wire.frames import Priority

WINDOW = 0.005


def frames_of(data: bytes, variant: str) -> list[dict]:
    _, payload = parse_ws_frame(data)
    obj = msgpack.unpackb(payload, raw=False) if variant == MSGPACK else json.loads(payload)
    return obj["frames"] if obj["type"] == "batch" else [obj]


def member(hub: Hub, room: str, variant: str = MSGPACK, cid: int = 1,
           budget: Budget | None = None) -> FakeSink:
    sink = FakeSink()
    conn = Conn(cid, sink, budget or Budget())
    conn.variant = variant
    hub.join(conn, room)
    return sink


def action(n: int, priority: Priority = Priority.COMMENT) -> Encoded:
    return Encoded({"type": "action", "n": n}, priority)


def test_a_quiet_room_gets_no_added_delay() -> None:
    hub = Hub(WINDOW)
    sink = member(hub, "r")
    assert isinstance(hub.offer("r", action(1), 10.0), FanoutResult)
    assert len(sink.written) == 1
    # Long after the window, the next message is written at once too.
    assert isinstance(hub.offer("r", action(2), 10.0 + 2 * WINDOW), FanoutResult)
    assert len(sink.written) == 2


def test_a_busy_room_sends_one_batch_per_tick() -> None:
    hub = Hub(WINDOW)
    sink = member(hub, "r")
    hub.offer("r", action(0), 1.0)  # written at once, opens the window
    due = hub.offer("r", action(1), 1.001)
    assert due == 1.0 + WINDOW
    for n in range(2, 10):
        assert hub.offer("r", action(n), 1.002) == due
    assert len(sink.written) == 1  # nothing more until the tick
    result = hub.flush(due)
    assert result.sent == 1 and len(sink.written) == 2
    assert [f["n"] for f in frames_of(sink.written[1], MSGPACK)] == list(range(1, 10))


@given(st.lists(st.floats(min_value=0, max_value=0.02), min_size=1, max_size=50))
def test_every_message_is_written_once_in_order_with_bounded_delay(gaps) -> None:
    """Whatever the arrival times, each message goes out exactly once, in
    order, no later than one window after it was offered."""
    hub = Hub(WINDOW)
    sink = member(hub, "r", JSON)
    now, due, offered = 0.0, None, {}
    delivered: list[int] = []

    def collect(at: float) -> None:
        seen = [f["n"] for w in sink.written for f in frames_of(w, JSON)]
        for n in seen[len(delivered):]:
            assert at - offered[n] <= WINDOW + 1e-9
        delivered[:] = seen

    for n, gap in enumerate(gaps):
        now += gap
        if due is not None and due <= now:
            hub.flush(due)
            collect(due)
            due = None
        offered[n] = now
        got = hub.offer("r", action(n), now)
        if isinstance(got, float):
            due = got if due is None else min(due, got)
        else:
            collect(now)
    if due is not None:
        hub.flush(due)
        collect(due)
    assert delivered == list(range(len(gaps)))


def test_a_batch_is_built_once_per_variant_and_floor() -> None:
    batch = Batch([action(1, Priority.LIKE), action(2, Priority.GIFT), action(3)])
    assert batch.frame_from(Priority.LIKE, MSGPACK) is batch.frame_from(Priority.LIKE, MSGPACK)
    assert [f["n"] for f in frames_of(batch.frame_from(Priority.LIKE, JSON), JSON)] == [1, 2, 3]
    assert [f["n"] for f in frames_of(batch.frame_from(Priority.COMMENT, JSON), JSON)] == [2, 3]
    assert [f["n"] for f in frames_of(batch.frame_from(Priority.GIFT, JSON), JSON)] == [2]
    assert batch.frame_from(Priority.CONTROL, JSON) is None


def test_a_connection_under_backpressure_gets_the_batch_without_low_classes() -> None:
    hub = Hub(WINDOW)
    budget = Budget(bytes=1000)
    fast = member(hub, "r", cid=1, budget=budget)
    slow = member(hub, "r", cid=2, budget=budget)
    hub.offer("r", action(0, Priority.GIFT), 0.0)
    slow.pending = 600  # past budget/2: likes and comments are shed
    for n, p in enumerate([Priority.LIKE, Priority.COMMENT, Priority.GIFT, Priority.CONTROL]):
        hub.offer("r", action(n + 1, p), 0.001)
    hub.flush(WINDOW)
    assert [f["n"] for f in frames_of(fast.written[-1], MSGPACK)] == [1, 2, 3, 4]
    assert [f["n"] for f in frames_of(slow.written[-1], MSGPACK)] == [3, 4]


def test_a_room_that_empties_before_its_tick_is_skipped() -> None:
    hub = Hub(WINDOW)
    sink = FakeSink()
    conn = Conn(1, sink, Budget())
    hub.join(conn, "r")
    hub.offer("r", action(0), 0.0)
    hub.offer("r", action(1), 0.001)
    hub.leave(conn, "r")
    assert hub.flush(WINDOW).sent == 0 and len(sink.written) == 1


def test_window_zero_turns_coalescing_off() -> None:
    hub = Hub(0.0)
    sink = member(hub, "r")
    for n in range(5):
        assert isinstance(hub.offer("r", action(n), 1.0), FanoutResult)
    assert len(sink.written) == 5


def state(section: str, partial: int, total: int) -> Encoded:
    return Encoded({"type": "state", "room": "r", "section": section, "partial": partial,
                    "total": total, "value": partial})


def test_state_in_one_tick_is_latest_wins_and_keeps_the_version_invariant() -> None:
    hub = Hub(WINDOW)
    sink = member(hub, "r")
    hub.offer("r", state("stage", 1, 1), 0.0)  # client now has stage=1, total=1
    for msg in (state("stage", 2, 2), action(7), state("meta", 1, 3), state("stage", 3, 4),
                state("stage", 4, 5)):
        hub.offer("r", msg, 0.001)
    hub.flush(WINDOW)
    frames = frames_of(sink.written[-1], MSGPACK)
    assert [(f.get("section"), f.get("partial")) for f in frames] == [
        (None, None), ("meta", 1), ("stage", 4)]
    # After the whole frame the client's partials sum to the last total: no gap.
    versions = {"stage": 1}
    for f in frames:
        if f["type"] == "state":
            versions[f["section"]] = f["partial"]
    assert sum(versions.values()) == frames[-1]["total"] == 5


@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=40))
def test_collapsed_ticks_always_end_consistent(sections) -> None:
    """Whatever the sequence of changes in a tick, applying the collapsed
    frame to an up-to-date client ends with sum(partials) == total."""
    hub = Hub(WINDOW)
    sink = member(hub, "r")
    hub.offer("r", action(0), 0.0)
    partials: dict[str, int] = {}
    for total, section in enumerate(sections, start=1):
        partials[section] = partials.get(section, 0) + 1
        hub.offer("r", state(section, partials[section], total), 0.001)
    hub.flush(WINDOW)
    client: dict[str, int] = {}
    frames = [f for w in sink.written[1:] for f in frames_of(w, MSGPACK)]
    for f in frames:
        client[f["section"]] = f["partial"]
    assert client == partials and sum(client.values()) == len(sections)
    assert len(frames) == len(set(sections))


def test_a_write_loop_longer_than_the_window_makes_the_next_messages_coalesce() -> None:
    """A big room whose write loop outlasts the window: the window counts from
    the loop's end, so what arrived meanwhile goes out as one batch at the next
    tick instead of one message at a time."""
    clock = [1.0]

    class SlowSink(FakeSink):
        def write(self, data: bytes) -> None:
            super().write(data)
            clock[0] += 0.001  # each write takes 1 ms: 20 members, 20 ms > WINDOW

    hub = Hub(WINDOW, lambda: clock[0])
    sinks = []
    for cid in range(20):
        sink = SlowSink()
        conn = Conn(cid, sink, Budget())
        conn.variant = MSGPACK
        hub.join(conn, "r")
        sinks.append(sink)
    assert isinstance(hub.offer("r", action(0), clock[0]), FanoutResult)
    end = clock[0]
    assert abs(end - 1.02) < 1e-9  # the loop took 20 ms
    # Arrivals right after the loop (they queued during it) wait for the tick.
    due = hub.offer("r", action(1), end)
    assert due == end + WINDOW
    assert hub.offer("r", action(2), end) == due
    assert all(len(s.written) == 1 for s in sinks)
    hub.flush(due)
    assert all([f["n"] for f in frames_of(s.written[1], MSGPACK)] == [1, 2] for s in sinks)
