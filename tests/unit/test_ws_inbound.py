"""What one WebSocket connection (edge/ws_conn.py) holds for a client that
sends faster than the node handles, or pings without reading: driven with
fakes of the loop, transport and node (no event loop, no socket)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from edge.config import EdgeConfig
from edge.ws_conn import WsConnection, WsServer
from edge.ws_framing import OP_BINARY, OP_PING
from tests.unit.test_ws_framing import client_frame


class Handle:
    def cancel(self) -> None:
        pass


class Loop:
    """The loop calls WsConnection makes; the task it starts never runs, as
    when the node is busy with the first frame."""

    def __init__(self) -> None:
        self.tasks = 0

    def time(self) -> float:
        return 0.0

    def call_at(self, when: float, *args: Any) -> Handle:
        return Handle()

    def call_later(self, delay: float, *args: Any) -> Handle:
        return Handle()

    def create_task(self, coro: Any) -> Any:
        coro.close()
        self.tasks += 1
        return SimpleNamespace()


class Transport:
    def __init__(self, buffered: int = 0) -> None:
        self.paused = False
        self.written: list[bytes] = []
        self.buffered = buffered

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False


def connection(config: EdgeConfig, transport: Transport) -> WsConnection:
    conn = SimpleNamespace(closed=False, cid=1)
    node = SimpleNamespace(config=config, open=lambda sink: (conn, SimpleNamespace()))
    ws = WsConnection(WsServer(node, Loop()))  # type: ignore[arg-type]
    ws.connection_made(transport)
    return ws


def test_reading_pauses_past_the_inbound_bytes_not_only_the_frame_count() -> None:
    """Eight 40 KB frames (far under the 64-frame pause) are over a 256 KB
    bound: the socket is no longer read (TCP pushes back on the client)."""
    transport = Transport()
    ws = connection(EdgeConfig(max_inbound_bytes=256 * 1024), transport)
    for _ in range(6):
        ws.data_received(client_frame(b"x" * 40_000, OP_BINARY))
    assert not transport.paused  # 240 000 bytes waiting: under the bound
    ws.data_received(client_frame(b"x" * 40_000, OP_BINARY))
    assert transport.paused


def test_pings_get_one_pong_per_packet_and_none_past_the_budget() -> None:
    transport = Transport()
    ws = connection(EdgeConfig(), transport)
    ws.data_received(b"".join(client_frame(b"%d" % i, OP_PING) for i in range(1000)))
    assert len(transport.written) == 1 and transport.written[0].endswith(b"999")
    # A client that leaves our writes unread past its budget gets no more.
    transport.buffered = EdgeConfig().budget.bytes + 1
    ws.data_received(client_frame(b"more", OP_PING))
    assert len(transport.written) == 1
