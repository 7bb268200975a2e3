"""Fan-out decisions: budgets, priority shedding, slow-consumer close, membership."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge.fanout import Budget, Conn, Hub, Verdict
from wire.close_codes import CloseCode
from wire.codecs import JSON, MSGPACK, Variant
from wire.encoded import Encoded
from wire.frames import Priority


class FakeSink:
    """An in-memory transport end: ``pending`` bytes stand for the unsent buffer."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.pending = 0
        self.closed: tuple[int, str] | None = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def buffered(self) -> int:
        return self.pending

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


BUDGET = Budget(bytes=1000, slow_grace=2.0, hard_factor=4)


def conn(cid: int = 1, variant: Variant = MSGPACK) -> tuple[Conn, FakeSink]:
    sink = FakeSink()
    c = Conn(cid, sink, BUDGET)
    c.variant = variant
    return c, sink


def msg(priority: Priority) -> Encoded:
    return Encoded({"type": "action", "kind": "x"}, priority)


def test_shedding_order_like_then_comment_then_gift_never_control() -> None:
    assert not BUDGET.sheds(Priority.LIKE, 249)
    assert BUDGET.sheds(Priority.LIKE, 250)
    assert not BUDGET.sheds(Priority.COMMENT, 499)
    assert BUDGET.sheds(Priority.COMMENT, 500)
    assert not BUDGET.sheds(Priority.GIFT, 999)
    assert BUDGET.sheds(Priority.GIFT, 1000)
    assert not BUDGET.sheds(Priority.CONTROL, 10**9)


@given(st.integers(min_value=0, max_value=5000))
def test_a_higher_class_is_never_shed_where_a_lower_one_is_kept(buffered) -> None:
    order = [Priority.LIKE, Priority.COMMENT, Priority.GIFT, Priority.CONTROL]
    shed = [BUDGET.sheds(p, buffered) for p in order]
    # Once a class is kept, every higher class is kept too.
    assert shed == sorted(shed, reverse=True)


def test_deliver_writes_the_shared_frame_of_the_connection_variant() -> None:
    enc = msg(Priority.COMMENT)
    a, sa = conn(1, MSGPACK)
    b, sb = conn(2, JSON)
    assert a.deliver(enc, 0.0) is Verdict.SENT
    assert b.deliver(enc, 0.0) is Verdict.SENT
    assert sa.written[0] is enc.frame(MSGPACK)  # built once, the same object
    assert sb.written[0] is enc.frame(JSON)
    assert sa.written[0][0] == 0x82 and sb.written[0][0] == 0x81  # FIN+binary / FIN+text


def test_over_budget_drops_low_priority_but_sends_control() -> None:
    c, sink = conn()
    sink.pending = 600
    assert c.deliver(msg(Priority.LIKE), 0.0) is Verdict.DROPPED
    assert c.deliver(msg(Priority.COMMENT), 0.0) is Verdict.DROPPED
    assert c.deliver(msg(Priority.GIFT), 0.0) is Verdict.SENT
    assert c.deliver(msg(Priority.CONTROL), 0.0) is Verdict.SENT
    assert sink.closed is None


def test_staying_over_budget_past_the_grace_closes_with_slow_code() -> None:
    c, sink = conn()
    sink.pending = 1000
    assert c.deliver(msg(Priority.CONTROL), 10.0) is Verdict.SENT
    assert c.deliver(msg(Priority.CONTROL), 11.9) is Verdict.SENT
    assert c.deliver(msg(Priority.CONTROL), 12.0) is Verdict.CLOSED
    assert sink.closed is not None and sink.closed[0] == CloseCode.SLOW_CONSUMER
    assert c.deliver(msg(Priority.CONTROL), 13.0) is Verdict.DROPPED  # closed: nothing more


def test_draining_below_budget_resets_the_grace() -> None:
    c, sink = conn()
    sink.pending = 1000
    c.deliver(msg(Priority.CONTROL), 0.0)
    sink.pending = 10
    c.deliver(msg(Priority.CONTROL), 1.5)
    sink.pending = 1000
    assert c.deliver(msg(Priority.CONTROL), 3.0) is Verdict.SENT  # grace restarted at 3.0
    assert sink.closed is None


def test_hard_limit_closes_at_once() -> None:
    c, sink = conn()
    sink.pending = 4000
    assert c.deliver(msg(Priority.CONTROL), 0.0) is Verdict.CLOSED
    assert sink.closed is not None and sink.closed[0] == CloseCode.SLOW_CONSUMER


def test_hub_broadcast_reaches_only_members_of_the_room() -> None:
    hub = Hub()
    a, sa = conn(1)
    b, sb = conn(2)
    c, sc = conn(3)
    assert hub.join(a, "r1") is True
    assert hub.join(b, "r1") is False
    hub.join(c, "r2")
    result = hub.broadcast("r1", msg(Priority.COMMENT), 0.0)
    assert result.sent == 2 and not result.dropped and not result.closed
    assert len(sa.written) == len(sb.written) == 1 and sc.written == []


def test_hub_reports_closed_connections_and_empty_rooms() -> None:
    hub = Hub()
    a, sa = conn(1)
    b, _sb = conn(2)
    hub.join(a, "r")
    hub.join(b, "r")
    sa.pending = 10**6
    result = hub.broadcast("r", msg(Priority.COMMENT), 0.0)
    assert result.closed == [a] and result.sent == 1
    assert hub.leave(a, "r") is False
    assert hub.leave(b, "r") is True  # last one out
    assert "r" not in hub.rooms


def test_online_changes_reports_each_count_once() -> None:
    hub = Hub()
    a, _ = conn(1)
    b, _ = conn(2)
    hub.join(a, "r")
    hub.join(b, "r")
    assert list(hub.online_changes()) == [("r", 2)]
    assert list(hub.online_changes()) == []
    hub.leave(b, "r")
    assert list(hub.online_changes()) == [("r", 1)]


def test_a_batch_counts_each_message_it_sheds_per_connection() -> None:
    """``dropped`` of a tick is the messages shed, one per message per
    connection: a batch written in part is a write, but the likes and
    comments it left out are counted (the actions-dropped metric)."""
    hub = Hub(window=0.01)
    room_conns = [conn(i) for i in range(4)]
    for c, _ in room_conns:
        hub.join(c, "r")
    # Unsent bytes: nothing, past budget/4, past budget/2, past the budget.
    for (_, sink), pending in zip(room_conns, (0, 300, 600, 1200), strict=True):
        sink.pending = pending
    first = hub.offer("r", msg(Priority.CONTROL), 0.0)  # a quiet room: written at once
    assert not isinstance(first, float) and first.sent == 4
    for p in (Priority.CONTROL, Priority.LIKE, Priority.COMMENT, Priority.GIFT):
        hub.offer("r", msg(p), 0.001)
    result = hub.flush(0.02)
    # Connection 0 sheds nothing, 1 the like, 2 the like and the comment,
    # 3 all three actions; the control message goes to all four.
    assert result.dropped == 0 + 1 + 2 + 3
    assert result.sent == 4
