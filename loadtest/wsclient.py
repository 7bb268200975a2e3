"""The benchmark's raw WebSocket client: one ``asyncio.Protocol`` per
connection, cheap enough that thousands of them in one process do not
limit what they measure.

It makes the HTTP upgrade by hand, masks its frames (RFC 6455 5.3), and
parses the server's unmasked frames incrementally. Setup (the upgrade, then
hello/join, or the Engine.IO v4 / Socket.IO v5 handshake of the socket.io
peer; nchan's subscriber is subscribed by the upgrade alone) takes the slow
road; once joined, ``data_received`` only walks frame headers and
counts a marker with one ``bytes.count`` over the complete frames of each
read, so a ``batch`` frame counts as its messages. Probe connections also
decode every frame and sample the latency (``body.t`` is the publisher's
wall clock at send time).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from typing import Any, cast

import msgpack

ROOM = "bench"
# The servers a run may target: ours, the python-socketio peer, the nchan peer.
LIVEROOM = "liveroom"
SOCKETIO = "python-socketio"
NCHAN = "nchan"
# The viewers' wire variants.
JSON = "json"
MSGPACK = "msgpack"

# What a viewer counts: one occurrence per measured message, in every wire
# variant (liveroom's server emits type, room, kind, ... in that order; the
# socket.io peer emits the same object).
STATE_SECTION = "stage"
BENCH_MARK = {JSON: b'"kind":"bench"', MSGPACK: b"\xa4kind\xa5bench"}
# Every action, warm-up ones included: what the server actually pushed.
ACTION_MARK = {JSON: b'"kind":"', MSGPACK: b"\xa4kind"}
JOINED_MARK = {JSON: b'"type":"joined"', MSGPACK: b"\xa4type\xa6joined"}
ERROR_MARK = {JSON: b'"type":"error"', MSGPACK: b"\xa4type\xa5error"}

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_pack_h16 = struct.Struct("!BBH").pack
_pack_h64 = struct.Struct("!BBQ").pack


# --------------------------------------------------------------------------
# Wire helpers (pure)
# --------------------------------------------------------------------------
def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One masked client frame (RFC 6455 5.3: every client frame is masked)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = _pack_h16(first, 0x80 | 126, n)
    else:
        head = _pack_h64(first, 0x80 | 127, n)
    mask = os.urandom(4)
    if n:
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        payload = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
    return head + mask + payload


def upgrade_request(host: str, port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def encode_liveroom(obj: dict[str, Any], codec: str) -> bytes:
    if codec == MSGPACK:
        return client_frame(msgpack.packb(obj, use_bin_type=True), OP_BINARY)
    return client_frame(json.dumps(obj, separators=(",", ":")).encode(), OP_TEXT)


def encode_socketio_event(event: str, data: Any, ack: int | None = None) -> bytes:
    """An Engine.IO message (4) holding a Socket.IO event (2) on namespace /."""
    head = "42" if ack is None else f"42{ack}"
    return client_frame((head + json.dumps([event, data], separators=(",", ":"))).encode())


# --------------------------------------------------------------------------
# The raw client
# --------------------------------------------------------------------------
class Stats:
    """Counters of one client process (shared by all its connections)."""

    __slots__ = ("actions", "bytes", "closes", "delivered", "frames", "last_seq", "lost",
                 "regressions", "samples", "timeline")

    def __init__(self) -> None:
        self.delivered = 0
        self.actions = 0
        self.frames = 0
        self.bytes = 0
        self.lost = 0
        self.closes: dict[int, int] = {}
        self.samples: list[float] = []
        # State mode, probes only: the last value seen per probe connection,
        # and how often a probe saw an older value after a newer one.
        self.last_seq: dict[int, int] = {}
        self.regressions = 0
        # (wall time, delivered, frames, bytes, actions), cumulative, every 20 ms
        self.timeline: list[tuple[float, int, int, int, int]] = []


_HTTP, _OPEN, _CONNECT, _JOIN, _JOINED = range(5)


class WsClient(asyncio.Protocol):
    """One viewer (or the publisher) on a raw transport. Setup (upgrade,
    hello/join or the Engine.IO handshake) takes the slow road; once joined,
    ``data_received`` only walks frame headers and counts the bench marker."""

    __slots__ = ("all_marker", "codec", "joined", "marker", "mode", "phase", "probe",
                 "request", "rest", "stats", "token", "transport")

    def __init__(self, mode: str, codec: str, request: bytes, token: str, probe: bool,
                 stats: Stats, joined: asyncio.Future[None]) -> None:
        self.mode = mode
        self.codec = codec
        self.request = request
        self.token = token
        self.probe = probe
        self.stats = stats
        self.joined = joined
        self.marker = BENCH_MARK[codec]
        self.all_marker = ACTION_MARK[codec]
        self.phase = _HTTP
        self.rest = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.phase == _JOINED:
            self.stats.lost += 1
        elif not self.joined.done():
            self.joined.set_exception(ConnectionError(f"closed during setup: {exc}"))

    def send(self, frame: bytes) -> None:
        assert self.transport is not None
        self.transport.write(frame)

    def data_received(self, data: bytes) -> None:
        if self.rest:
            data = self.rest + data
            self.rest = b""
        if self.phase != _JOINED:
            data = self._setup(data)
            if not data:
                return
        # The hot path: walk the headers of the complete frames, handle the
        # rare control frame, then count the marker once over all of them.
        n = len(data)
        pos = 0
        frames = 0
        while n - pos >= 2:
            size = data[pos + 1]  # server frames are unmasked: the length is the byte
            if size < 126:
                start = pos + 2
            elif size == 126:
                if n - pos < 4:
                    break
                start = pos + 4
                size = (data[pos + 2] << 8) | data[pos + 3]
            else:
                if n - pos < 10:
                    break
                start = pos + 10
                size = int.from_bytes(data[pos + 2:start], "big")
            end = start + size
            if end > n:
                break
            op = data[pos] & 0x0F
            if op > OP_BINARY or size == 1:
                # A control frame, or a one-byte Engine.IO packet (the "2" ping).
                self._control(op, data[start:end])
            elif self.probe:
                self._sample(data[start:end])
            frames += 1
            pos = end
        if pos:
            stats = self.stats
            stats.delivered += data.count(self.marker, 0, pos)
            stats.actions += data.count(self.all_marker, 0, pos)
            stats.frames += frames
            stats.bytes += pos
        if pos < n:
            self.rest = data[pos:]

    def _control(self, op: int, payload: bytes) -> None:
        if op == OP_PING:
            self.send(client_frame(payload, OP_PONG))
        elif op == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.stats.closes[code] = self.stats.closes.get(code, 0) + 1
            if self.transport is not None:
                self.transport.close()
        elif op == OP_TEXT and payload == b"2":
            self.send(client_frame(b"3"))  # Engine.IO pong

    def _sample(self, payload: bytes) -> None:
        """Latency of every measured message in one frame (probe connections)."""
        now = time.time()
        messages: list[Any]
        try:
            if self.mode == SOCKETIO:
                if not payload.startswith(b"42"):
                    return
                messages = [json.loads(payload[2:])[1]]
            else:
                obj = (msgpack.unpackb(payload, raw=False) if self.codec == MSGPACK
                       else json.loads(payload))
                messages = obj["frames"] if obj.get("type") == "batch" else [obj]
        except (ValueError, KeyError, IndexError, TypeError):
            return
        samples = self.stats.samples
        for m in messages:
            if not isinstance(m, dict):
                continue
            if m.get("type") == "state":
                # State mode: the bench fields ride in the section's value.
                value = m.get("value")
                if isinstance(value, dict) and value.get("kind") == "bench":
                    samples.append(now - value["t"])
                    last = self.stats.last_seq.get(id(self), 0)
                    if value["s"] < last:
                        self.stats.regressions += 1
                    self.stats.last_seq[id(self)] = max(last, value["s"])
            elif m.get("kind") == "bench":
                samples.append(now - m["body"]["t"])

    # -- setup (slow road) -----------------------------------------------
    def _fail(self, why: str) -> None:
        if not self.joined.done():
            self.joined.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    def _setup(self, data: bytes) -> bytes:
        """Advance the handshake; returns the bytes that follow the join."""
        if self.phase == _HTTP:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.rest = data
                return b""
            status = data[:data.find(b"\r\n")]
            if status.split()[1:2] != [b"101"]:
                self._fail(f"upgrade refused: {status.decode(errors='replace')}")
                return b""
            data = data[end + 4:]
            if self.mode == NCHAN:  # subscribed: nchan sends the messages, nothing else
                self._now_joined()
                return data
            if self.mode == LIVEROOM:
                self.send(encode_liveroom({"type": "hello", "token": self.token, "v": 1},
                                          self.codec)
                          + encode_liveroom({"type": "join", "room": ROOM}, self.codec))
                self.phase = _JOIN
            else:
                self.phase = _OPEN
        pos = 0
        n = len(data)
        while n - pos >= 2:
            size = data[pos + 1]
            start = pos + 2
            if size == 126:
                if n - pos < 4:
                    break
                size, start = int.from_bytes(data[pos + 2:pos + 4], "big"), pos + 4
            elif size == 127:
                if n - pos < 10:
                    break
                size, start = int.from_bytes(data[pos + 2:pos + 10], "big"), pos + 10
            end = start + size
            if end > n:
                break
            op = data[pos] & 0x0F
            payload = data[start:end]
            pos = end
            if op > OP_BINARY:
                self._control(op, payload)
                if op == OP_CLOSE:
                    self._fail(f"closed by the server during setup: {payload[2:]!r}")
                    return b""
                continue
            if self._setup_frame(payload):
                self._now_joined()
                return data[pos:]
        self.rest = data[pos:]
        return b""

    def _now_joined(self) -> None:
        """Setup is over. From here on this connection only reads:
        TCP_QUICKACK takes its socket out of the kernel's interactive
        (delayed-ACK, "pingpong") mode, which the handshake's request and
        reply put it in, so that every server's connections are acknowledged
        alike (docs/BENCHMARKS.md, "who pays for the ACKs")."""
        self.phase = _JOINED
        sock = self.transport.get_extra_info("socket") if self.transport else None
        quickack = getattr(socket, "TCP_QUICKACK", None)
        if sock is not None and quickack is not None:
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
        self.joined.set_result(None)

    def _setup_frame(self, payload: bytes) -> bool:
        """One data frame during setup; True once joined."""
        if self.mode == LIVEROOM:
            if JOINED_MARK[self.codec] in payload:
                return True
            if ERROR_MARK[self.codec] in payload:
                self._fail(f"error from the server: {payload[:300]!r}")
            return False
        if payload == b"2":
            self.send(client_frame(b"3"))
        elif self.phase == _OPEN and payload.startswith(b"0"):
            self.send(client_frame(b"40"))
            self.phase = _CONNECT
        elif self.phase == _CONNECT and payload.startswith(b"40"):
            self.send(encode_socketio_event("join", ROOM, ack=1))
            self.phase = _JOIN
        elif payload.startswith(b"44"):
            self._fail(f"socket.io connect refused: {payload[:300]!r}")
        elif self.phase == _JOIN and payload.startswith(b"431"):
            return True
        return False
