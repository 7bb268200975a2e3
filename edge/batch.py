"""The frames of one coalescing tick: what a connection is handed (one
message or a ``Batch`` of a tick's messages), and the latest-wins rule for
state within a tick. ``edge.fanout`` writes them."""

from __future__ import annotations

from typing import Protocol

from wire.codecs import Variant
from wire.encoded import Encoded, batch_of
from wire.frames import Priority


class Outgoing(Protocol):
    """What a connection is handed: one message (``Encoded``) or a ``Batch``."""

    def frame_from(self, floor: Priority, variant: Variant) -> bytes | None: ...


def latest_state_only(messages: list[Encoded]) -> list[Encoded]:
    """Latest wins: of several changes of one state section in one tick, only
    the last is sent. Safe because ``total == sum(partials)`` holds after the
    whole frame, so a client sees no gap for versions it skipped (a 30 Hz
    ``stage`` costs one state frame per tick however many changes it had)."""
    last: dict[object, int] = {}
    for i, m in enumerate(messages):
        obj = m.obj
        if obj.get("type") == "state":
            last[(obj.get("room"), obj.get("section"))] = i
    if len(last) == sum(1 for m in messages if m.obj.get("type") == "state"):
        return messages  # no section changed twice
    keep = set(last.values())
    return [m for i, m in enumerate(messages)
            if m.obj.get("type") != "state" or i in keep]


class Batch:
    """The messages of one coalescing tick. ``frame_from`` gives the one frame
    for a shedding floor and a wire variant, built on first use and shared by
    every connection at that floor and variant. ``shed`` counts the messages
    left out of the frames handed out (one per message per connection), for
    the metric of shed actions: a batch written in part is still a write."""

    __slots__ = ("_frames", "_shed", "messages", "shed")

    def __init__(self, messages: list[Encoded]) -> None:
        self.messages = messages
        self._frames: dict[tuple[Priority, Variant], bytes | None] = {}
        self._shed: dict[Priority, int] = {}
        self.shed = 0

    def frame_from(self, floor: Priority, variant: Variant) -> bytes | None:
        if floor is not Priority.LIKE:
            # Under backpressure only (the common path pays one comparison).
            self.shed += self._shed_at(floor)
        key = (floor, variant)
        try:
            return self._frames[key]
        except KeyError:
            pass
        kept = [m for m in self.messages if m.priority >= floor]
        if not kept:
            frame = None
        elif len(kept) == 1:
            frame = kept[0].frame(variant)
        else:
            frame = batch_of(kept, variant)
        self._frames[key] = frame
        return frame

    def _shed_at(self, floor: Priority) -> int:
        n = self._shed.get(floor)
        if n is None:
            n = self._shed[floor] = sum(1 for m in self.messages if m.priority < floor)
        return n
