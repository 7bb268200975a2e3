"""How an agent sits in a room: a ``RoomLink``.

``InProcessLink`` is a connection of the edge node in this process with an
in-memory sink: it says ``hello`` and ``join`` through its ``Connection``
(``edge/connection.py``, the core of every transport) like any client, so
the agent goes through the same session, hub and fan-out path as a viewer
(it counts in the online count, it is shed and closed by the same budget if
it stops reading). Its words go out through ``EdgeNode.publish_action`` as
the backend API's do: an agent is trusted server-side code, and its token
chunks must not be throttled by the per-user action rate meant for people.

The sink's ``write`` is called inside the fan-out loop, so it only appends
the frame bytes to a queue and wakes the agent; decoding happens on the
agent's own task, off the fan-out path.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import msgpack

from edge.auth import Identity
from edge.connection import DETACHED, Connection
from edge.node import EdgeNode
from edge.session import may_write_section
from wire.codecs import MSGPACK, encode_msgpack
from wire.errors import Forbidden
from wire.requests import hello_request, join_request

FrameHandler = Callable[[dict[str, Any]], None]

_u16 = struct.Struct("!H").unpack_from
_u64 = struct.Struct("!Q").unpack_from


def server_payloads(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(opcode, payload) of each complete unmasked server frame in ``data``
    (the sink gets whole frames: the node frames each message once)."""
    i, n = 0, len(data)
    while i + 2 <= n:
        op = data[i] & 0x0F
        size = data[i + 1] & 0x7F
        i += 2
        if size == 126:
            size = _u16(data, i)[0]
            i += 2
        elif size == 127:
            size = _u64(data, i)[0]
            i += 8
        yield op, data[i:i + size]
        i += size


def frames_of(obj: Any) -> Iterator[dict[str, Any]]:
    """A decoded message, or each message of a ``batch``."""
    if not isinstance(obj, dict):
        return
    if obj.get("type") == "batch":
        for f in obj.get("frames", ()):
            if isinstance(f, dict):
                yield f
    else:
        yield obj


class RoomLink(Protocol):
    identity: Identity

    async def join(self, room: str) -> None: ...

    def publish(self, room: str, kind: str, body: Any) -> None: ...

    async def write_state(self, room: str, section: str, value: Any,
                          expected: int | None) -> tuple[int, int]: ...

    async def section_partial(self, room: str, section: str) -> int: ...

    async def close(self) -> None: ...


class QueueSink:
    """A connection's transport end that keeps what it is sent for the agent.
    ``buffered`` is what the agent has not read yet, so the edge's outbound
    budget applies to it as to any client."""

    __slots__ = ("_bytes", "_queue", "closed", "wake")

    def __init__(self, wake: Callable[[], None]) -> None:
        self._queue: deque[bytes] = deque()
        self._bytes = 0
        self.wake = wake
        self.closed: tuple[int, str] | None = None

    def write(self, data: bytes) -> None:
        self._queue.append(data)
        self._bytes += len(data)
        self.wake()

    def buffered(self) -> int:
        return self._bytes

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.wake()

    def drain(self) -> Iterator[dict[str, Any]]:
        while self._queue:
            data = self._queue.popleft()
            self._bytes -= len(data)
            for op, payload in server_payloads(data):
                if op == 0x2:
                    yield from frames_of(msgpack.unpackb(payload, raw=False))


class InProcessLink:
    def __init__(self, node: EdgeNode, identity: Identity, token: str,
                 on_frame: FrameHandler) -> None:
        self.node = node
        self.identity = identity
        self._token = token
        self._on_frame = on_frame
        self._ready = asyncio.Event()
        self.sink = QueueSink(self._ready.set)
        # Untimed: the hello goes with the first join, and an agent's token
        # is not cut off. Its frames are handed over in the agent's task.
        self.core = Connection(node, self.sink, DETACHED, None, timed=False)
        self._reader: asyncio.Task[None] | None = None
        self._sender = identity.public()

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.core.hand(encode_msgpack(frame), MSGPACK)

    async def join(self, room: str) -> None:
        if self._reader is None:
            await self._send(hello_request(self._token))
            self._reader = asyncio.create_task(self._read(), name=f"agent-{self.identity.user}")
        await self._send(join_request(room))

    async def _read(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            for frame in self.sink.drain():
                self._on_frame(frame)
            if self.sink.closed is not None:
                self._on_frame({"type": "closed", "code": self.sink.closed[0],
                                "reason": self.sink.closed[1]})
                return

    def publish(self, room: str, kind: str, body: Any) -> None:
        self.node.publish_action(room, kind, body, self._sender)

    async def write_state(self, room: str, section: str, value: Any,
                          expected: int | None) -> tuple[int, int]:
        if not may_write_section(self.identity, room, section):
            raise Forbidden(f"agent {self.identity.user!r} may not write {section!r}")
        return await self.node.write_state(room, section, value, expected)

    async def section_partial(self, room: str, section: str) -> int:
        s = await self.node.store.section(room, section)
        return 0 if s is None else s.partial

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.core.end()
