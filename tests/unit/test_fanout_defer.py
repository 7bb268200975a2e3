"""Deferred messages (an agent's streamed words) ride in the room's next
frame: never a write loop of their own when another message comes within
``defer_window``, and never a delay for the room's other messages."""

from __future__ import annotations

from edge.fanout import FanoutResult, Hub
from tests.unit.test_coalescing import WINDOW, action, frames_of, member
from wire.codecs import MSGPACK


def test_the_next_message_carries_a_deferred_one_at_once() -> None:
    hub = Hub(WINDOW, defer_window=0.1)
    sink = member(hub, "r")
    assert hub.offer("r", action(1), 10.0, defer=True) == 10.1
    assert sink.written == []
    # A quiet room's next message is written at once, with the deferred one.
    result = hub.offer("r", action(2), 10.05)
    assert isinstance(result, FanoutResult) and result.sent == 1
    assert [f["n"] for f in frames_of(sink.written[0], MSGPACK)] == [1, 2]
    # The deferred tick finds nothing left to write.
    assert hub.flush(10.1).sent == 0 and len(sink.written) == 1


def test_a_deferred_message_alone_goes_out_at_its_tick() -> None:
    hub = Hub(WINDOW, defer_window=0.1)
    sink = member(hub, "r")
    hub.offer("r", action(1), 10.0, defer=True)
    # The group's deadline is its first word's: the second rides with it.
    assert hub.offer("r", action(2), 10.02, defer=True) == 10.1
    assert hub.flush(10.1).sent == 1
    assert [f["n"] for f in frames_of(sink.written[0], MSGPACK)] == [1, 2]


def test_a_deferred_message_joins_a_pending_tick_without_moving_it() -> None:
    hub = Hub(WINDOW, defer_window=0.1)
    sink = member(hub, "r")
    assert isinstance(hub.offer("r", action(1), 10.0), FanoutResult)  # quiet: at once
    due = hub.offer("r", action(2), 10.001)  # within the window: queued
    assert due == 10.0 + WINDOW
    assert hub.offer("r", action(3), 10.002, defer=True) == due
    hub.flush(due)
    assert [f["n"] for f in frames_of(sink.written[1], MSGPACK)] == [2, 3]


def test_a_normal_message_after_a_recent_write_keeps_the_window() -> None:
    hub = Hub(WINDOW, defer_window=0.1)
    sink = member(hub, "r")
    hub.offer("r", action(1), 10.0)
    hub.offer("r", action(2), 10.001, defer=True)
    # Within the window of the last write: queued for the tick, not at once.
    assert hub.offer("r", action(3), 10.002) == 10.0 + WINDOW
    assert len(sink.written) == 1


def test_a_stale_tick_leaves_later_deferred_words_waiting() -> None:
    """A tick set for words a message has carried since (or another room's
    tick) does not write words deferred after them: they keep their own
    deadline, and the next message carries them."""
    hub = Hub(WINDOW, defer_window=0.1)
    sink = member(hub, "r")
    hub.offer("r", action(1), 10.0, defer=True)          # tick due at 10.1
    hub.offer("r", action(2), 10.05)                     # carries 1 at once
    assert hub.offer("r", action(3), 10.08, defer=True) == 10.18
    assert hub.flush(10.1).sent == 0                     # the stale tick
    assert hub.next_flush == 10.18 and len(sink.written) == 1
    hub.offer("r", action(4), 10.15)                     # carries 3
    assert [f["n"] for f in frames_of(sink.written[1], MSGPACK)] == [3, 4]
    assert hub.flush(10.18).sent == 0 and hub.next_flush is None


def test_deferred_words_go_out_alone_at_their_own_deadline() -> None:
    hub = Hub(WINDOW, defer_window=0.1)
    sink = member(hub, "r")
    other = member(hub, "o")
    hub.offer("r", action(1), 10.0, defer=True)
    hub.offer("o", action(2), 10.0)                      # quiet room: at once
    hub.offer("o", action(3), 10.001)                    # queued: tick at 10.0+WINDOW
    assert hub.flush(10.0 + WINDOW).sent == 1            # room o only
    assert sink.written == [] and len(other.written) == 2
    assert hub.next_flush == 10.1
    assert hub.flush(10.1).sent == 1 and hub.next_flush is None
    assert [f["n"] for f in frames_of(sink.written[0], MSGPACK)] == [1]
