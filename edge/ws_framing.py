"""WebSocket (RFC 6455) on the server side, the pure part: the opening
handshake's request check and answer, and an incremental parser of the
frames a client sends. No event loop, no I/O: ``edge/ws_conn.py`` feeds it
the bytes of one connection and acts on what it returns.

The parser keeps nothing between messages but the bytes of an unfinished
frame (an idle connection holds ``None``), reassembles fragmented messages,
and returns control frames as they come (they may arrive between the
fragments of a message). Its work is linear in the bytes fed, however they
are split: a packet that completes frames is parsed in place, and only an
unfinished frame's bytes are kept, in one ``bytearray`` that later packets
are appended to (never ``old + new``, which copies the unfinished frame
again on every packet: quadratic for a big frame sent in small pieces).
What it refuses, it refuses with the close code the connection must end
with:

- 1002 (protocol error): a reserved bit set (no extension is ever
  negotiated), an unknown opcode, an unmasked frame (clients must mask), a
  control frame fragmented or over 125 bytes, a continuation with no
  message begun, a new message inside a fragmented one;
- 1009 (message too big): a message over ``max_message`` bytes, refused as
  soon as a frame header announces it, before its payload is read; a
  message in more than ``max_fragments`` frames (empty fragments cost
  nothing against the size, so their number is what must be bounded).

Invalid UTF-8 in a text message (1007) is the caller's to find: it decodes
the text anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from typing import Final

# aiohttp's compiled unmasking (its own WebSocket reader uses it):
# tests/integration/test_ws_writer_pin.py pins it.
from aiohttp._websocket.helpers import websocket_mask

from wire.websocket import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT

__all__ = ["OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG", "OP_TEXT", "ClientFrames",
           "WsProtocolError", "handshake_response", "upgrade_key"]

CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_INVALID_DATA: Final = 1007
CLOSE_TOO_BIG: Final = 1009

# The request head we read before handing a request on: far above any real
# upgrade request (browsers send under 1 KB).
MAX_HEAD: Final = 8192
# Frames one message may be sent in (EdgeConfig.max_fragments): browsers send
# a message in one frame; a fragmenting proxy or library uses a handful.
MAX_FRAGMENTS: Final = 1024

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_u16 = struct.Struct("!H").unpack_from
_u64 = struct.Struct("!Q").unpack_from


class WsProtocolError(Exception):
    """The client broke the protocol: close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


# --------------------------------------------------------------------------
# The opening handshake (RFC 6455 section 4.2)
# --------------------------------------------------------------------------
def _tokens(value: str) -> set[str]:
    return {t.strip().lower() for t in value.split(",")}


def upgrade_key(head: bytes, path: str) -> str | None:
    """The ``Sec-WebSocket-Key`` of ``head`` (a request head, without the
    blank line) when it is a valid WebSocket upgrade of ``GET path``; None
    for anything else, which the HTTP server then answers (with its error,
    for a bad upgrade)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] != "GET" or parts[2] != "HTTP/1.1":
        return None
    target = parts[1]
    if target != path and not target.startswith(path + "?"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or name.lower() in headers:
            # Malformed, folded or repeated: not for us to judge.
            return None
        headers[name.lower()] = value.strip()
    if "websocket" not in _tokens(headers.get("upgrade", "")) \
            or "upgrade" not in _tokens(headers.get("connection", "")) \
            or headers.get("sec-websocket-version") != "13":
        return None
    key = headers.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    return key


def handshake_response(key: str) -> bytes:
    """The ``101 Switching Protocols`` answer to an upgrade with ``key``. No
    extension (never permessage-deflate: a frame's bytes are shared by every
    recipient) and no subprotocol."""
    accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode()


# --------------------------------------------------------------------------
# Client frames (RFC 6455 section 5)
# --------------------------------------------------------------------------
class ClientFrames:
    """Incremental parser of one connection's client frames."""

    __slots__ = ("_buf", "_msg_len", "_msg_op", "_parts", "max_fragments", "max_message")

    def __init__(self, max_message: int, max_fragments: int = MAX_FRAGMENTS) -> None:
        self.max_message = max_message
        self.max_fragments = max_fragments
        # The bytes of an unfinished frame, or None (an idle connection).
        self._buf: bytearray | None = None
        self._msg_op = 0  # the opcode of a fragmented message in progress, else 0
        self._parts: list[bytes] | None = None
        self._msg_len = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Whole messages (``OP_TEXT``/``OP_BINARY`` with their unmasked
        payload) and control frames (``OP_CLOSE``, ``OP_PING``, ``OP_PONG``)
        completed by ``data``, in order. Raises ``WsProtocolError``."""
        buf: bytes | bytearray
        kept = self._buf
        if kept is None:
            buf = data  # the common case: parsed in place, no copy
        else:
            kept += data  # amortised append: linear in the bytes fed
            buf = kept
        out: list[tuple[int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            size = b1 & 0x7F
            head = pos + 2
            if size == 126:
                if end - head < 2:
                    break
                size = _u16(buf, head)[0]
                head += 2
            elif size == 127:
                if end - head < 8:
                    break
                size = _u64(buf, head)[0]
                head += 8
            op = b0 & 0x0F
            self._check(b0, b1, op, size)
            start = head + 4
            if end - start < size:
                break
            payload = bytearray(buf[start:start + size])
            if size:
                # The compiled helper takes the mask as bytes only.
                websocket_mask(bytes(buf[head:start]), payload)
            pos = start + size
            self._take(b0 & 0x80, op, bytes(payload), out)
        if pos >= end:
            self._buf = None
        elif kept is None:
            self._buf = bytearray(buf[pos:])
        elif pos:
            del kept[:pos]  # only an unfinished frame's bytes stay
        return out

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held."""
        return 0 if self._buf is None else len(self._buf)

    def _check(self, b0: int, b1: int, op: int, size: int) -> None:
        """A frame header's rules, checked before its payload is read."""
        if b0 & 0x70:
            raise WsProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits set")
        if not b1 & 0x80:
            raise WsProtocolError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        if op >= 0x8:
            if op not in (OP_CLOSE, OP_PING, OP_PONG):
                raise WsProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {op:#x}")
            if not b0 & 0x80 or size > 125:
                raise WsProtocolError(CLOSE_PROTOCOL_ERROR, "bad control frame")
            return
        if op not in (OP_CONT, OP_TEXT, OP_BINARY):
            raise WsProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {op:#x}")
        if op == OP_CONT:
            if not self._msg_op:
                raise WsProtocolError(CLOSE_PROTOCOL_ERROR, "continuation without a message")
            assert self._parts is not None
            if len(self._parts) >= self.max_fragments:
                raise WsProtocolError(CLOSE_TOO_BIG,
                                      f"message in over {self.max_fragments} fragments")
            total = self._msg_len + size
        else:
            if self._msg_op:
                raise WsProtocolError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
            total = size
        if total > self.max_message:
            raise WsProtocolError(CLOSE_TOO_BIG, f"message over {self.max_message} bytes")

    def _take(self, fin: int, op: int, payload: bytes,
              out: list[tuple[int, bytes]]) -> None:
        if op >= 0x8 or (fin and op != OP_CONT):
            out.append((op, payload))
        elif op != OP_CONT:  # the first fragment
            self._msg_op, self._parts, self._msg_len = op, [payload], len(payload)
        else:
            assert self._parts is not None
            self._parts.append(payload)
            self._msg_len += len(payload)
            if fin:
                out.append((self._msg_op, b"".join(self._parts)))
                self._msg_op, self._parts, self._msg_len = 0, None, 0
