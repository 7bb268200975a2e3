"""The connection core (edge/connection.py) without a transport: a fake node
that records what reaches it (and can hold a frame, as a node busy with the
store does), a fake adapter, and, for the timers, a loop that only records
them; then once on a real ``EdgeNode`` with memory services. No socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from edge.auth import Identity
from edge.config import EdgeConfig
from edge.connection import PAUSE, RESUME, Connection
from edge.metrics import Metrics
from edge.node import EdgeNode
from edge.session import Phase
from room_router.bus import MemoryBus
from room_router.registry import MemoryConnectionRegistry
from wire.close_codes import CloseCode
from wire.codecs import JSON, MSGPACK, Variant


class Node:
    """What the core asks of an ``EdgeNode``; ``gate`` set holds every frame."""

    def __init__(self, config: EdgeConfig | None = None, now: float = 1000.0) -> None:
        self.config = config or EdgeConfig()
        self.received: list[tuple[bytes | str, Variant]] = []
        self.closed: list[object] = []
        self.closes: list[tuple[int, str]] = []
        self.gate: asyncio.Event | None = None
        self.now = now
        self.conn = SimpleNamespace(closed=False, cid=1)
        self.session = SimpleNamespace(phase=Phase.AWAITING_HELLO, identity=None)

    def clock(self) -> float:
        return self.now

    def open(self, sink: object) -> tuple[Any, Any]:
        return self.conn, self.session

    async def receive(self, conn: Any, session: Any, data: bytes | str,
                      variant: Variant) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.received.append((data, variant))

    async def close(self, conn: Any, session: Any) -> None:
        self.closed.append(conn)

    def close_connection(self, conn: Any, code: int, reason: str) -> None:
        self.closes.append((code, reason))


class IO:
    """The adapter: counts resumes (with the queue then: frames, bytes)."""

    def __init__(self) -> None:
        self.resumed = 0
        self.finished_ = 0
        self.core: Connection | None = None
        self.at_resume: list[tuple[int, int]] = []

    def resume_reading(self) -> None:
        self.resumed += 1
        assert self.core is not None
        self.at_resume.append((self.core.queued, self.core.queued_bytes))

    def finished(self) -> None:
        self.finished_ += 1


class Timer:
    def __init__(self, delay: float, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.delay, self.fn, self.args = delay, fn, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        assert not self.cancelled
        self.fn(*self.args)


class TimerLoop:
    """Records timers; tasks never run (the node is busy)."""

    def __init__(self) -> None:
        self.timers: list[Timer] = []

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> Timer:
        self.timers.append(Timer(delay, fn, args))
        return self.timers[-1]

    def create_task(self, coro: Any) -> Any:
        coro.close()
        return NoTask()


class NoTask:
    def add_done_callback(self, fn: Callable[..., None]) -> None:
        pass


def core(node: Node, io: IO | None = None, loop: Any = None, **kw: Any) -> Connection:
    io = io or IO()
    io.core = Connection(node, object(), io, loop or asyncio.get_running_loop(),  # type: ignore[arg-type]
                         **kw)
    return io.core


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_frames_reach_the_node_in_order_by_one_task_that_ends() -> None:
    node = Node()
    c = core(node)
    assert c.feed(b"a", MSGPACK, 1) is False
    assert c.feed("b", JSON, 1) is False
    assert c.queued == 2 and c.queued_bytes == 2
    await settle()
    assert node.received == [(b"a", MSGPACK), ("b", JSON)]
    assert c.queued == 0 and c.queued_bytes == 0
    assert c._task is None and c._inbox is None  # idle: no task, no deque


async def test_pause_past_the_frame_count_and_resume_once_down_again() -> None:
    node, io = Node(), IO()
    node.gate = asyncio.Event()
    c = core(node, io)
    says = [c.feed(b"x", MSGPACK, 1) for _ in range(PAUSE + 10)]
    # Paused once, at the PAUSE-th frame (the task holds the first one).
    assert says.index(True) == PAUSE - 1 and says.count(True) == 1
    node.gate.set()
    await settle()
    assert len(node.received) == PAUSE + 10
    assert io.resumed == 1


async def test_pause_past_the_inbound_bytes_and_resume_at_a_quarter() -> None:
    node, io = Node(EdgeConfig(max_inbound_bytes=1000)), IO()
    node.gate = asyncio.Event()
    c = core(node, io)
    # Three frames, far under PAUSE, are over the bytes.
    assert [c.feed(b"x", MSGPACK, 400) for _ in range(3)] == [False, False, True]
    node.gate.set()
    await settle()
    assert len(node.received) == 3
    (_frames, nbytes), = io.at_resume
    assert nbytes <= 1000 // 4


async def test_a_resume_waits_for_resume_frames() -> None:
    node, io = Node(), IO()
    node.gate = asyncio.Event()
    c = core(node, io)
    for _ in range(PAUSE):
        c.feed(b"", MSGPACK, 0)
    node.gate.set()
    await settle()
    assert io.at_resume == [(RESUME, 0)]


async def test_lost_hands_over_the_frames_read_then_the_node_forgets() -> None:
    node, io = Node(), IO()
    node.gate = asyncio.Event()
    c = core(node, io)
    for i in range(PAUSE):
        c.feed(b"%d" % i, MSGPACK, 1)
    c.lost()
    c.lost()  # idempotent
    assert node.closed == [] and io.finished_ == 0
    node.gate.set()
    await settle()
    assert len(node.received) == PAUSE
    assert node.closed == [node.conn] and io.finished_ == 1
    assert io.resumed == 0  # nothing to read any more


async def test_lost_when_idle_ends_at_once_and_once() -> None:
    node, io = Node(), IO()
    c = core(node, io)
    c.lost()
    c.lost()
    await settle()
    assert node.closed == [node.conn] and io.finished_ == 1


async def test_end_is_awaited_and_a_closed_connection_acts_on_nothing() -> None:
    node, io = Node(), IO()
    c = core(node, io)
    await c.hand(b"a", MSGPACK)
    node.conn.closed = True
    await c.hand(b"b", MSGPACK)
    c.feed(b"c", MSGPACK, 1)
    await settle()
    assert node.received == [(b"a", MSGPACK)]
    await c.end()
    assert node.closed == [node.conn] and io.finished_ == 1


def test_no_hello_in_time_closes_4102() -> None:
    node, loop = Node(), TimerLoop()
    core(node, loop=loop)
    (hello,) = loop.timers
    assert hello.delay == node.config.hello_timeout
    hello.fire()
    assert node.closes == [(CloseCode.HELLO_TIMEOUT, "no hello in time")]


async def test_a_hello_replaces_the_hello_timer_with_the_token_expiry_4200() -> None:
    node, loop = Node(now=1000.0), TimerLoop()
    c = core(node, loop=loop)
    await c.hand(b"not yet", MSGPACK)
    assert len(loop.timers) == 1
    node.session.identity = Identity("u", "U", "viewer", 1060.0)
    node.session.phase = Phase.READY
    await c.hand(b"hello", MSGPACK)
    hello, expiry = loop.timers
    assert hello.cancelled and expiry.delay == 60.0  # by the node's clock
    await c.hand(b"more", MSGPACK)
    assert len(loop.timers) == 2  # armed once
    expiry.fire()
    assert node.closes == [(CloseCode.TOKEN_EXPIRED, "token expired")]
    c.lost()
    assert expiry.cancelled


async def test_an_expired_token_expires_at_once_and_lost_cancels_every_timer() -> None:
    node, loop = Node(now=1000.0), TimerLoop()
    c = core(node, loop=loop)
    node.session.identity = Identity("u", "U", "viewer", 900.0)
    await c.hand(b"hello", MSGPACK)
    assert loop.timers[1].delay == 0.0
    c.lost()
    assert all(t.cancelled for t in loop.timers)
    await c.hand(b"after", MSGPACK)  # a frame handed over after the end arms nothing
    assert len(loop.timers) == 2


async def test_an_untimed_connection_has_no_timers() -> None:
    node, loop = Node(), TimerLoop()
    c = core(node, loop=loop, timed=False)
    node.session.identity = Identity("u", "U", "agent", 1.0)
    await c.hand(b"hello", MSGPACK)
    assert loop.timers == []


class Sink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def write(self, data: bytes) -> None:
        self.frames.append(data)

    def buffered(self) -> int:
        return 0

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


async def test_on_a_real_node_a_frame_is_answered_and_the_end_forgets() -> None:
    metrics = Metrics()
    node = EdgeNode(node_id="n1", config=EdgeConfig(coalesce_window=0), jwt_secret="s" * 32,
                    store=None, bus=MemoryBus(), registry=MemoryConnectionRegistry(),  # type: ignore[arg-type]
                    inbox=None, metrics=metrics)  # type: ignore[arg-type]
    sink, io = Sink(), IO()
    c = Connection(node, sink, io, asyncio.get_running_loop())
    assert metrics.connections._value.get() == 1
    c.feed(json.dumps({"type": "ping", "t": 1}), JSON, 24)
    await settle()
    assert b'"hello_required"' in sink.frames[0]
    c.lost()
    await settle()
    assert metrics.connections._value.get() == 0 and io.finished_ == 1
    assert c.session.phase is Phase.CLOSED
