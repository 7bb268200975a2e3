"""``Encoded``: one outgoing message, encoded once per variant, framed once,
and the batch frame that carries the messages of one coalescing tick."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgpack

from wire.codecs import (
    JSON,
    MSGPACK,
    WT_JSON,
    WT_MSGPACK,
    Variant,
    codec_of,
    encode_json,
    encode_msgpack,
)
from wire.errors import LiveroomError
from wire.frames import Priority
from wire.websocket import OP_BINARY, OP_TEXT, ws_frame
from wire.webtransport import WT_DATAGRAM_MAX, wt_datagram_record, wt_frame


class Encoded:
    """One outgoing message, encoded once per variant and framed once.

    The payload and the complete WebSocket frame of each variant are built on
    first use, so that a room with only msgpack clients never pays for JSON,
    and vice versa. Instances are shared by every recipient and never mutated
    after the frames are built."""

    __slots__ = ("_json", "_json_frame", "_msgpack", "_msgpack_frame", "_wt_frames", "lossy",
                 "obj", "priority")

    def __init__(self, obj: Mapping[str, Any], priority: Priority = Priority.CONTROL) -> None:
        self.obj = obj
        self.priority = priority
        # A state change of a lossy section (``wire.webtransport.is_lossy_section``): QUIC
        # sessions take it as an unreliable datagram instead of stream data.
        self.lossy = False
        self._wt_frames: dict[Variant, bytes] | None = None
        self._msgpack: bytes | None = None
        self._json: bytes | None = None
        self._msgpack_frame: bytes | None = None
        self._json_frame: bytes | None = None

    @classmethod
    def from_msgpack(cls, payload: bytes, priority: Priority) -> Encoded:
        """Wrap a msgpack payload received from elsewhere (the bus) without
        re-encoding it; the JSON variant is made only if a JSON client needs it."""
        enc = cls(msgpack.unpackb(payload, raw=False), priority)
        enc._msgpack = payload
        return enc

    def payload(self, variant: Variant) -> bytes:
        if variant is MSGPACK or variant is WT_MSGPACK:
            p = self._msgpack
            if p is None:
                p = self._msgpack = encode_msgpack(self.obj)
            return p
        p = self._json
        if p is None:
            p = self._json = encode_json(self.obj)
        return p

    def frame(self, variant: Variant) -> bytes:
        if variant is MSGPACK:
            f = self._msgpack_frame
            if f is None:
                f = self._msgpack_frame = ws_frame(self.payload(MSGPACK), OP_BINARY)
            return f
        if variant is JSON:
            f = self._json_frame
            if f is None:
                f = self._json_frame = ws_frame(self.payload(JSON), OP_TEXT)
            return f
        return self.wt_frame(variant)

    def wt_frame(self, variant: Variant) -> bytes:
        """The WebTransport frame (WT_MSGPACK or WT_JSON), built once and
        shared by every QUIC session of that variant: a length-prefixed
        stream frame, or a datagram record when the message is lossy and
        small enough for one datagram."""
        frames = self._wt_frames
        if frames is None:
            frames = self._wt_frames = {}
        f = frames.get(variant)
        if f is None:
            payload = self.payload(variant)
            if self.lossy and len(payload) <= WT_DATAGRAM_MAX:
                f = wt_datagram_record(payload)
            else:
                f = wt_frame(payload)
            frames[variant] = f
        return f

    def frame_from(self, floor: Priority, variant: Variant) -> bytes | None:
        """The frame if this message is admitted at ``floor`` (the lowest
        priority a connection still takes), else None."""
        return self.frame(variant) if self.priority >= floor else None


# A batch frame is {"type": "batch", "frames": [m1, m2, ...]}: the messages of
# one coalescing tick in one WebSocket frame. It is assembled from the
# messages' already-encoded payloads, never by re-encoding them: msgpack items
# are self-delimiting, so an array is its header followed by the items, and a
# JSON array is the items joined by commas.
BATCH: Final = "batch"
_BATCH_MSGPACK_HEAD: Final = b"\x82\xa4type\xa5batch\xa6frames"
_BATCH_JSON_HEAD: Final = b'{"type":"batch","frames":['
_pack_u16 = struct.Struct("!BH").pack
_pack_u32 = struct.Struct("!BI").pack


def batch_frame(payloads: Sequence[bytes], variant: Variant) -> bytes:
    """One frame carrying ``payloads`` (encoded in ``variant``): a WebSocket
    frame, or a length-prefixed WebTransport frame for WT_MSGPACK/WT_JSON."""
    if variant is WT_MSGPACK or variant is WT_JSON:
        return wt_frame(_batch_payload(payloads, codec_of(variant)))
    return _ws_batch_frame(payloads, variant)


def _batch_payload(payloads: Sequence[bytes], codec: Variant) -> bytes:
    if codec is MSGPACK:
        n = len(payloads)
        if n < 16:
            head = bytes((0x90 | n,))
        elif n < 65536:
            head = _pack_u16(0xDC, n)
        else:
            head = _pack_u32(0xDD, n)
        return b"".join((_BATCH_MSGPACK_HEAD, head, *payloads))
    return b"".join((_BATCH_JSON_HEAD, b",".join(payloads), b"]}"))


def batch_of(messages: Sequence[Encoded], variant: Variant) -> bytes:
    """The one write for the messages of a tick. For WebTransport variants,
    lossy messages come out of the batch as datagram records (after the
    stream frame), so that a 30 Hz section never waits behind a lost packet."""
    if variant is not WT_MSGPACK and variant is not WT_JSON:
        return _ws_batch_frame([m.payload(variant) for m in messages], variant)
    reliable: list[bytes] = []
    datagrams: list[bytes] = []
    for m in messages:
        f = m.wt_frame(variant)
        if f[0] & 0x80:
            datagrams.append(f)
        else:
            reliable.append(m.payload(variant))
    if len(reliable) > 1:
        head = batch_frame(reliable, variant)
    else:
        head = wt_frame(reliable[0]) if reliable else b""
    return b"".join((head, *datagrams))


def _ws_batch_frame(payloads: Sequence[bytes], variant: Variant) -> bytes:
    if variant is MSGPACK:
        return ws_frame(_batch_payload(payloads, MSGPACK), OP_BINARY)
    return ws_frame(_batch_payload(payloads, JSON), OP_TEXT)


def encoded_error(err: LiveroomError) -> Encoded:
    """``err``'s ``error`` frame, ready to write (``wire.outgoing.error_frame``)."""
    return Encoded(err.to_frame())
