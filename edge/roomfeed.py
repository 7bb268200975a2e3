"""A room's messages from the bus to its local members: the hot path of an
edge (bus ``room.<id>`` -> ``RoomFeed.on_room_message`` -> ``Hub.offer`` ->
sockets), with the node's one flush timer.

A message arrives as msgpack bytes from the stamping edge; it is wrapped
once (``Encoded``), given its priority (an action's by kind, everything
else CONTROL), and offered to the hub, which writes it at once in a quiet
room or queues it for the room's coalescing tick. One timer for the whole
node fires the ticks: it is moved earlier when a room's tick is due before
it, never one timer per room. A state change of a room whose members poll
its head is not pushed; a lossy section's change goes to QUIC sessions as a
datagram. Every result goes to the writer's accounting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edge.config import EdgeConfig
from edge.fanout import Hub
from edge.writer import Writer
from wire.encoded import Encoded
from wire.frames import ACTION, STATE, Priority, action_priority
from wire.webtransport import is_lossy_section


class RoomFeed:
    __slots__ = ("_flush_at", "_flush_handle", "_monotonic", "config", "hub", "writer")

    def __init__(self, *, hub: Hub, config: EdgeConfig, writer: Writer,
                 monotonic: Callable[[], float]) -> None:
        self.hub = hub
        self.config = config
        self.writer = writer
        self._monotonic = monotonic
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flush_at = float("inf")

    def on_room_message(self, subject: str, payload: bytes) -> None:
        room = subject[len("room."):]
        enc = Encoded.from_msgpack(payload, Priority.CONTROL)
        obj = enc.obj
        defer = False
        if obj.get("type") == ACTION:
            kind = obj.get("kind", "")
            enc.priority = action_priority(kind)
            # An agent's words ride in the room's next frame (Hub.offer).
            defer = isinstance(kind, str) and kind.startswith("agent.")
        elif obj.get("type") == STATE:
            local = self.hub.rooms.get(room)
            if local is not None and local.poll_mode:
                return  # its members poll the head instead
            # QUIC sessions take a lossy section's changes as datagrams.
            enc.lossy = is_lossy_section(str(obj.get("section", "")),
                                         self.config.lossy_sections)
        self.fanout(room, enc, defer)

    def fanout(self, room: str, enc: Encoded, defer: bool = False) -> None:
        t0 = self._monotonic()
        result = self.hub.offer(room, enc, t0, defer=defer)
        if isinstance(result, float):
            # Queued for the room's tick: one timer for the whole node, moved
            # earlier when a tick is due before it (deferred messages may
            # have set it later than a room's coalescing window).
            self._flush_by(result, t0)
            return
        self.writer.account(result, t0)

    def stop(self) -> None:
        """Write what is queued now, and stop the timer."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()

    def _flush(self) -> None:
        self._flush_handle = None
        self._flush_at = float("inf")
        t0 = self._monotonic()
        self.writer.account(self.hub.flush(t0), t0)
        if self.hub.next_flush is not None:
            # Deferred words still allowed to wait for a carrier.
            self._flush_by(self.hub.next_flush, self._monotonic())

    def _flush_by(self, at: float, now: float) -> None:
        """Have the node's one flush timer fire by ``at`` (monotonic)."""
        if self._flush_handle is None or at < self._flush_at:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self._flush_at = at
            self._flush_handle = asyncio.get_running_loop().call_later(
                max(0.0, at - now), self._flush)
