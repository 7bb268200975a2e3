"""Limits and timings of an edge node, with their defaults (docs/PROTOCOL.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.fanout import Budget
from edge.ratelimit import Rate


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    # Frames larger than this get ``frame_too_large`` and are ignored; frames
    # larger than ``hard_frame_factor`` times this close the connection (1009)
    # before they are read whole.
    max_frame_bytes: int = 64 * 1024
    hard_frame_factor: int = 4
    max_rooms_per_conn: int = 10
    max_comment_chars: int = 500
    # Actions per user per room; peer messages per user.
    action_rate: Rate = field(default_factory=lambda: Rate(per_second=5.0, burst=20))
    peer_rate: Rate = field(default_factory=lambda: Rate(per_second=2.0, burst=10))
    budget: Budget = field(default_factory=Budget)
    hello_timeout: float = 10.0
    heartbeat: float = 30.0
    online_interval: float = 2.0
    # Coalescing window (seconds): messages that follow a write to a room
    # within this window go out together in one batch frame at its end. A
    # quiet room gets no added delay; 0 turns coalescing off.
    coalesce_window: float = 0.005
    # A room with this many members on the edge takes its state by polling
    # the CDN instead of push (0: never); it goes back to push below half.
    poll_threshold: int = 10_000
    poll_interval: float = 1.0
    # Pending peer messages fetched per round of the inbox replay on connect.
    inbox_replay: int = 500
    # Base names of the lossy sections: their changes go to QUIC sessions as
    # unreliable datagrams (healed by the next one or by sync).
    lossy_sections: frozenset[str] = frozenset({"positions"})
