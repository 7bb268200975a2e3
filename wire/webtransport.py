"""WebTransport (QUIC) framing: the stream frames, the datagram records of
lossy state, and the session's close capsule."""

from __future__ import annotations

import struct
from typing import Final

from wire.codecs import WT_JSON, WT_MSGPACK, Variant

# --------------------------------------------------------------------------
# WebTransport framing (QUIC edge, edge/quic.py). A session carries the same
# frames as a WebSocket on one bidirectional stream, each frame a 4-byte
# big-endian length and the payload: msgpack, or JSON when the payload starts
# with "{" (what a text frame is on a WebSocket). The hello's encoding fixes the
# connection's variant, as on a WebSocket: WT_MSGPACK or WT_JSON.
#
# Lossy state goes as unreliable QUIC datagrams: one datagram is one frame
# payload (no length prefix), a ``state`` frame carrying its versions. Inside
# the edge, between the hub and a QUIC sink, such a message is a *datagram
# record*: the same 4-byte header with its top bit set. A sink never writes a
# record to the stream; it sends its payload as a datagram. Lengths are
# therefore below 2**31 (frames are capped far below that anyway).
# --------------------------------------------------------------------------
WT_PATH: Final = "/wt"
WT_HEADER: Final = 4
WT_DATAGRAM_FLAG: Final = 0x8000_0000
# A datagram must fit one QUIC packet of the smallest size every path carries
# (1200 bytes) with the packet, frame and quarter-stream-id headers; larger
# lossy messages go on the stream.
WT_DATAGRAM_MAX: Final = 1100
_pack_wt_len = struct.Struct("!I").pack
unpack_wt_len = struct.Struct("!I").unpack_from


def wt_variant_of(payload: bytes) -> Variant:
    """The variant of one WebTransport frame payload, by its first byte."""
    return WT_JSON if payload[:1] in (b"{", b" ", b"\n", b"\r", b"\t") else WT_MSGPACK


def wt_frame(payload: bytes) -> bytes:
    """One length-prefixed WebTransport stream frame."""
    return _pack_wt_len(len(payload)) + payload


def wt_datagram_record(payload: bytes) -> bytes:
    """A datagram record (internal to the edge, see above)."""
    return _pack_wt_len(WT_DATAGRAM_FLAG | len(payload)) + payload


def is_lossy_section(section: str, lossy_bases: frozenset[str]) -> bool:
    """A section is lossy when its base name (before any ".suffix") is one of
    the edge's lossy sections (``--lossy-sections``, default ``positions``):
    ``positions`` and ``positions.bot1`` both are."""
    return section.split(".", 1)[0] in lossy_bases


# WebTransport session close codes are the close codes (wire.close_codes),
# carried in the CLOSE_WEBTRANSPORT_SESSION capsule (type 0x2843: a 32-bit
# code and a UTF-8 reason of at most 1024 bytes) on the session's CONNECT
# stream, which then ends.
WT_CLOSE_CAPSULE: Final = 0x2843


def wt_close_capsule(code: int, reason: str) -> bytes:
    """The CLOSE_WEBTRANSPORT_SESSION capsule (RFC 9297 capsule framing)."""
    body = struct.pack("!I", code) + reason.encode()[:1024]
    return _varint(WT_CLOSE_CAPSULE) + _varint(len(body)) + body


def _varint(n: int) -> bytes:
    """A QUIC variable-length integer (RFC 9000 section 16)."""
    if n < 0x40:
        return bytes((n,))
    if n < 0x4000:
        return struct.pack("!H", 0x4000 | n)
    if n < 0x4000_0000:
        return struct.pack("!I", 0x8000_0000 | n)
    return struct.pack("!Q", 0xC000_0000_0000_0000 | n)
