"""A bare asyncio WebSocket client that can also break the protocol on purpose.

The stress ring (tests/stress/) and the fuzzer (``python -m loadtest.fuzz``)
need what a well-behaved client library refuses to do: send a frame with a
reserved opcode or a reserved bit, an unmasked frame, a control frame in
pieces, a continuation with no message begun, a text frame that is not
UTF-8, a header that announces more bytes than will ever come. They also
need to read the server's close code when there is one, and to tell a close
frame (the server decided) from a dropped socket (1006).

``frame()`` is pure (bytes in, bytes out); ``RawWebSocket`` is a thin loop
over an asyncio stream: it sends exactly the bytes it is given and parses the
server's frames (never masked) one at a time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any, Final

import msgpack

from wire.websocket import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT

__all__ = ["ABNORMAL", "OP_BINARY", "OP_CLOSE", "OP_CONT", "OP_PING", "OP_PONG", "OP_TEXT",
           "RawWebSocket", "frame"]

# RFC 6455 7.4.1: "no close frame was received" (the socket just ended).
ABNORMAL: Final = 1006
_u16 = struct.Struct("!H")
_u64 = struct.Struct("!Q")


def frame(payload: bytes, opcode: int = OP_BINARY, *, fin: bool = True, rsv: int = 0,
          masked: bool = True, length: int | None = None) -> bytes:
    """One client frame. ``rsv`` sets the three reserved bits (0..7);
    ``masked=False`` breaks RFC 6455 5.3; ``length`` claims another payload
    length in the header than the payload has (a lie the server must survive)."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0x0F)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((first, mask_bit | n))
    elif n < 65536:
        head = bytes((first, mask_bit | 126)) + _u16.pack(n)
    else:
        head = bytes((first, mask_bit | 127)) + _u64.pack(n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    if payload:
        stream = int.from_bytes((key * (len(payload) // 4 + 1))[:len(payload)], "big")
        payload = (int.from_bytes(payload, "big") ^ stream).to_bytes(len(payload), "big")
    return head + key + payload


class RawWebSocket:
    """One WebSocket connection to ``/ws``: raw sends, parsed receives.

    ``recv`` answers ``(opcode, payload)``; ``messages`` decodes the liveroom
    frames (a ``batch`` into its frames) and stops at the close. Nothing is
    read unless a method here is awaited."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.close_code: int | None = None  # set once the connection has ended
        self.close_reason = ""

    @classmethod
    async def connect(cls, host: str, port: int, path: str = "/ws", timeout: float = 10.0,
                      rcvbuf: int | None = None) -> RawWebSocket:
        """``rcvbuf``: a small kernel receive buffer, set before the handshake
        so that the window is small from the start: a client that stops
        reading then holds little, and the server's own buffer fills."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)),
                                   timeout)
            # The stream buffers at most 2 x limit before it stops reading the socket.
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        except BaseException:
            sock.close()
            raise
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except BaseException:
            writer.close()
            raise
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise ConnectionError(f"upgrade refused: {head[:80]!r}")
        return cls(reader, writer)

    # -- sending ---------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        """Exactly these bytes on the socket (a no-op once it has ended)."""
        if not self.writer.is_closing():
            self.writer.write(data)

    def send(self, payload: bytes | str) -> None:
        """One well-formed message: bytes as binary (msgpack), str as text (JSON)."""
        if isinstance(payload, str):
            self.send_raw(frame(payload.encode(), OP_TEXT))
        else:
            self.send_raw(frame(payload, OP_BINARY))

    def send_obj(self, obj: dict[str, Any], codec: str = "msgpack") -> None:
        if codec == "msgpack":
            self.send(msgpack.packb(obj, use_bin_type=True))
        else:
            self.send(json.dumps(obj))

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            pass

    # -- receiving -------------------------------------------------------------
    async def recv(self, timeout: float | None = None) -> tuple[int, bytes]:
        """The next server frame; ``(OP_CLOSE, b"")`` with ``close_code``
        ABNORMAL when the socket ends without a close frame."""
        try:
            return await asyncio.wait_for(self._read_frame(), timeout)
        except (asyncio.IncompleteReadError, ConnectionError):
            self._ended(ABNORMAL, "")
            return OP_CLOSE, b""

    async def _read_frame(self) -> tuple[int, bytes]:
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = _u16.unpack(await self.reader.readexactly(2))[0]
        elif n == 127:
            n = _u64.unpack(await self.reader.readexactly(8))[0]
        payload = await self.reader.readexactly(n) if n else b""
        opcode = b0 & 0x0F
        if opcode == OP_CLOSE:
            code = _u16.unpack(payload[:2])[0] if len(payload) >= 2 else 1005
            self._ended(code, payload[2:].decode("utf-8", "replace"))
        return opcode, payload

    def _ended(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self.writer.close()

    async def messages(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """The liveroom frames of the next data message (a ``batch`` unpacked);
        ``[]`` once the connection has ended (see ``close_code``). Control
        frames are skipped (the server's pings answered)."""
        while True:
            opcode, payload = await self.recv(timeout)
            if opcode == OP_CLOSE:
                return []
            if opcode == OP_PING:
                self.send_raw(frame(payload, OP_PONG))
                continue
            if opcode not in (OP_TEXT, OP_BINARY):
                continue
            obj = msgpack.unpackb(payload, raw=False) if opcode == OP_BINARY \
                else json.loads(payload)
            if obj.get("type") == "batch":
                return list(obj["frames"])
            return [obj]

    async def wait_closed(self, timeout: float) -> int:
        """Read (and drop) everything up to the end; the close code."""
        async with asyncio.timeout(timeout):
            while self.close_code is None:
                await self.recv()
        return self.close_code

    def abort(self) -> None:
        """Drop the socket with no close frame, as a lost network does."""
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()
        if self.close_code is None:
            self.close_code = ABNORMAL
