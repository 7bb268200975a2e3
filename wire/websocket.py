"""WebSocket frames as the server writes them (RFC 6455), built once."""

from __future__ import annotations

import struct
from typing import Final

# --------------------------------------------------------------------------
# Pre-built WebSocket frames (RFC 6455 section 5.2). A server frame is never
# masked, so one frame's bytes fit every recipient: build once, write N times.
# --------------------------------------------------------------------------
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
_FIN: Final = 0x80
_pack_h16 = struct.Struct("!BBH").pack
_pack_h64 = struct.Struct("!BBQ").pack


def ws_frame(payload: bytes, opcode: int) -> bytes:
    """One complete, unmasked, unfragmented, uncompressed WebSocket frame."""
    n = len(payload)
    first = _FIN | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return _pack_h16(first, 126, n) + payload
    return _pack_h64(first, 127, n) + payload


OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
# A frame continuing a fragmented message (only clients fragment: edge/ws_framing.py).
OP_CONT: Final = 0x0
_pack_close = struct.Struct("!H").pack


def ws_close_frame(code: int, reason: str) -> bytes:
    """A close frame; the reason is cut to fit the 125-byte control payload."""
    return ws_frame(_pack_close(code) + reason.encode()[:123], OP_CLOSE)
