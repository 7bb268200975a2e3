"""The write loop's fast path (``Hub._write`` on a sink with a ``stream``)
decides exactly as ``Conn.deliver`` does: the same bytes to the same
connections, the same drops and closes, the same backpressure bookkeeping,
whatever the members' backlogs, variants and the messages' classes; and a
stream that raises closes its own connection only."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.batch import Batch
from edge.fanout import Budget, Conn, FanoutResult, Hub
from tests.unit.test_fanout import FakeSink
from wire.close_codes import CloseCode
from wire.codecs import JSON, MSGPACK
from wire.encoded import Encoded
from wire.frames import Priority

BUDGET = Budget(bytes=1000, slow_grace=2.0, hard_factor=4)


class StreamSink(FakeSink):
    """A sink whose ``stream`` is itself: what ``edge.ws.WsSink`` offers."""

    def __init__(self, closing: bool = False, raises: str = "") -> None:
        super().__init__()
        self.stream = self
        self.closing = closing
        self.raises = raises

    def write(self, data: bytes) -> None:
        if self.raises == "write":
            raise ConnectionResetError("transport gone")
        if not self.closing:
            super().write(data)

    def get_write_buffer_size(self) -> int:
        if self.raises == "buffered":
            raise OSError("transport gone")
        return self.pending

    def buffered(self) -> int:
        return self.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self.closing


def members(hub: Hub, backlogs: list[int], variants: list[str], fast: bool,
            ) -> list[tuple[Conn, FakeSink]]:
    out = []
    for i, (pending, variant) in enumerate(zip(backlogs, variants, strict=True)):
        sink: FakeSink = StreamSink() if fast else FakeSink()
        sink.pending = pending
        conn = Conn(i, sink, BUDGET)
        conn.variant = variant
        hub.join(conn, "r")
        out.append((conn, sink))
    return out


def outcome(result: FanoutResult, pairs: list[tuple[Conn, FakeSink]]) -> object:
    return (result.sent, result.dropped, sorted(c.cid for c in result.closed),
            sorted(c.cid for c in result.failed), len(result.errors),
            [(list(s.written), s.closed, c.closed, c.over_since, c.last_buffered)
             for c, s in pairs])


PRIORITIES = list(Priority)


@settings(max_examples=200, deadline=None)
@given(
    backlogs=st.lists(st.sampled_from([0, 10, 249, 250, 499, 500, 999, 1000, 3999, 4000]),
                      min_size=1, max_size=8),
    rounds=st.lists(st.tuples(st.lists(st.sampled_from(PRIORITIES), min_size=1, max_size=4),
                              st.floats(0, 3), st.integers(-300, 300)),
                    min_size=1, max_size=5),
    data=st.data(),
)
def test_the_fast_path_decides_as_deliver_does(backlogs, rounds, data) -> None:
    variants = data.draw(st.lists(st.sampled_from([JSON, MSGPACK]),
                                  min_size=len(backlogs), max_size=len(backlogs)))
    hubs = {fast: Hub() for fast in (True, False)}
    pairs = {fast: members(hubs[fast], backlogs, variants, fast) for fast in (True, False)}
    now = 0.0
    for priorities, dt, drift in rounds:
        now += dt
        messages = [Encoded({"type": "action", "kind": "x", "p": int(p)}, p)
                    for p in priorities]
        seen = []
        for fast in (True, False):
            # The same messages, a batch each side (its frames are cached per side).
            out = Batch(messages) if len(messages) > 1 else messages[0]
            result = hubs[fast]._write(hubs[fast].rooms["r"], out, now)
            seen.append(outcome(result, pairs[fast]))
            for _, sink in pairs[fast]:
                sink.pending = max(0, sink.pending + drift)
        assert seen[0] == seen[1]


def test_a_raising_stream_closes_its_own_connection_only() -> None:
    for where in ("write", "buffered"):
        hub = Hub()
        bad = StreamSink(raises=where)
        good = StreamSink()
        a, b = Conn(1, bad, BUDGET), Conn(2, good, BUDGET)
        hub.join(a, "r")
        hub.join(b, "r")
        result = hub.broadcast("r", Encoded({"type": "action", "kind": "x"}, Priority.COMMENT), 0.0)
        assert result.failed == [a] and result.sent == 1, where
        assert a.closed and bad.closed is not None and bad.closed[0] == CloseCode.INTERNAL_ERROR
        assert isinstance(a.failure, OSError)
        assert len(good.written) == 1 and not b.closed


def test_a_closing_stream_is_not_written() -> None:
    hub = Hub()
    sink = StreamSink(closing=True)
    conn = Conn(1, sink, BUDGET)
    hub.join(conn, "r")
    hub.broadcast("r", Encoded({"type": "action", "kind": "x"}, Priority.COMMENT), 0.0)
    assert sink.written == []
