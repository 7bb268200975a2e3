"""Limits and timings of an edge node, with their defaults (docs/PROTOCOL.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.fanout import Budget
from room_router.ratelimit import Rate
from wire.decode import DEFAULT_MAX_VALUE_BYTES


@dataclass(frozen=True, slots=True)
class HttpTimeouts:
    """Timeouts of every HTTP connection of every role (edge/http_site.py):
    the defence against slowloris, where a client holds a connection (a file
    descriptor, a request handler) by sending a request slowly or not at all.
    Each ends the connection without an answer."""

    # A request head (request line and headers) must be complete this long
    # after its first byte; a new connection's first head, this long after
    # the accept. As long as the hello timeout: a real client sends its head
    # in one packet, so this only bounds what a slow attacker can hold.
    head: float = 10.0
    # A request body must be complete this long after its head. Bodies are at
    # most 64 KiB (6.5 KB/s is enough); the bound is on the whole body, not
    # between two bytes, which a byte a second would defeat.
    body: float = 10.0
    # A keep-alive connection with no request begun is closed after this.
    # Longer than the 60 s an nginx (the CDN proxy) keeps an idle upstream
    # connection, so the origin never closes one as the proxy reuses it; as
    # long as nginx's own client keep-alive.
    idle: float = 75.0


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    # Frames larger than this get ``frame_too_large`` and are ignored; frames
    # larger than ``hard_frame_factor`` times this close the connection (1009)
    # before they are read whole.
    max_frame_bytes: int = 64 * 1024
    hard_frame_factor: int = 4
    # Frames one WebSocket message may come in: past it, 1009 (empty
    # fragments cost nothing against the size, so their number is bounded).
    max_fragments: int = 1024
    # Bytes of client frames received and not yet handled by the node, per
    # connection (up to 4 hard-limit frames): past it a WebSocket stops
    # reading (TCP pushes back on the client); a WebTransport session, whose
    # stream aioquic cannot pause, is closed with 4100.
    max_inbound_bytes: int = 1024 * 1024
    # WebTransport sessions per QUIC connection: one more CONNECT gets 429.
    # A client needs one; a few cover a page with several widgets.
    max_wt_sessions: int = 4
    # The value rule (wire/decode.py): every field of a frame or HTTP body
    # is at most this big in msgpack (and at most MAX_VALUE_DEPTH = 32 levels
    # deep, a protocol constant), else ``invalid_field``. As big as a frame:
    # it bounds what the bus, the stores and the inbox hold however a value
    # came in (a JSON frame, the HTTP API, a raised frame limit).
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    # Failures a client can cause (an internal error on its frame or HTTP
    # request, a fan-out error) are logged at most this many lines per kind
    # per interval; the rest are counted, and the next line says how many
    # were suppressed (plumbing/ratelog.py). The metrics count every one.
    error_log_lines: int = 5
    error_log_interval: float = 60.0
    max_rooms_per_conn: int = 10
    # Authenticated connections of one user on one edge: a token is not a
    # licence to hold thousands of sockets (each costs ~5 KB and a descriptor).
    max_conns_per_user: int = 32
    # The same for a character (role ``agent``, minted server-side): one
    # connection per room it is seated in, and one agents process serves
    # many rooms, so its bound is the seats' (llm_agents/seats.py).
    max_conns_per_agent: int = 10_000
    max_comment_chars: int = 500
    # Actions per user per room; peer messages per user.
    action_rate: Rate = field(default_factory=lambda: Rate(per_second=5.0, burst=20))
    peer_rate: Rate = field(default_factory=lambda: Rate(per_second=2.0, burst=10))
    # Frames per connection, of every kind (hello, ping, join, leave, sync,
    # peer_ack...): each costs 1, and a join or sync costs 1 more per
    # ``frame_cost_bytes`` of its reply, charged once the reply is built (the
    # budget may go into debt: the next frames wait). A busy client (10
    # rooms at the action rate, pings, syncs of small rooms) stays far below;
    # a flood gets ``rate_limited`` with ``retry_after``.
    frame_rate: Rate = field(default_factory=lambda: Rate(per_second=100.0, burst=400))
    frame_cost_bytes: int = 4096
    # Sections per room: a write that would make one more is refused
    # (``too_many_sections``). Bounds what a sync or snapshot re-encodes.
    max_sections: int = 256
    # A room with no member on this node and no write for this long is
    # dropped from the embedded (in-memory) state store, its state with it;
    # in the two-tier store its Redis keys expire this long after its last
    # change reached PostgreSQL. A day: a room keeps its state through a
    # break in streaming, and abandoned rooms stop costing memory.
    room_idle_seconds: float = 86_400.0
    budget: Budget = field(default_factory=Budget)
    hello_timeout: float = 10.0
    heartbeat: float = 30.0
    online_interval: float = 2.0
    # Coalescing window (seconds): messages that follow a write to a room
    # within this window go out together in one batch frame at its end. A
    # quiet room gets no added delay; 0 turns coalescing off.
    coalesce_window: float = 0.005
    # The fan-out's send loop: "c" (edge/_sendloop.c, when it was built;
    # else the Python loop) or "python" (always the Python loop: for A/B
    # benchmarks and as a way out).
    send_loop: str = "c"
    # A room with this many members on the edge takes its state by polling
    # the CDN instead of push (0: never); it goes back to push below half.
    poll_threshold: int = 10_000
    poll_interval: float = 1.0
    # Pending peer messages fetched per round of the inbox replay on connect.
    inbox_replay: int = 500
    # The most one user may hold in the peer inbox unacknowledged; a message
    # past either is refused to its sender (``inbox_full``). 1,000 messages
    # is days of private messages to a person (or 8 minutes of one sender at
    # the full peer rate); 1 MiB, the outbound budget, is what one replay
    # can hand a connection without it having to drain more than its budget.
    # Together they bound what others can make a user store and replay.
    inbox_max_messages: int = 1000
    inbox_max_bytes: int = 1 << 20
    # Base names of the lossy sections: their changes go to QUIC sessions as
    # unreliable datagrams (healed by the next one or by sync).
    lossy_sections: frozenset[str] = frozenset({"positions"})
    # Head, body and idle keep-alive timeouts of the HTTP connections.
    http: HttpTimeouts = field(default_factory=HttpTimeouts)
