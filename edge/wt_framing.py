"""WebTransport stream framing, pure: bytes in, frames out.

Theory of operation
-------------------
A WebTransport session carries the liveroom frames on one bidirectional QUIC
stream, each as a 4-byte big-endian length and the payload
(``wire.webtransport.wt_frame``). QUIC hands the stream over in pieces of any
size, so ``FrameReader`` reassembles them: ``feed(data)`` returns the
payloads completed by ``data``, in order. A header that announces more than
the hard limit (4 x ``max_frame_bytes``, as on a WebSocket) raises
``FrameTooBig`` before any of that frame is buffered: the adapter closes the
session with 1009. Frames between the limit and the hard limit are read
whole and handed on, so that the node answers ``frame_too_large`` exactly as
it does for a WebSocket.

Outgoing, the hub writes the same pre-built bytes to every session; those
bytes may hold datagram records (lossy state, see ``wire.webtransport``) next to
stream frames. ``split_records`` separates them: the stream bytes are written
as they are (one write), the datagram payloads go out as QUIC datagrams.
"""

from __future__ import annotations

from wire.webtransport import WT_DATAGRAM_FLAG, WT_HEADER, unpack_wt_len


class FrameTooBig(Exception):
    """A frame header announced ``size`` bytes, over the hard limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes is over the hard limit of {limit}")
        self.size = size
        self.limit = limit


class FrameReader:
    __slots__ = ("_buf", "hard_limit")

    def __init__(self, hard_limit: int) -> None:
        self.hard_limit = hard_limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= WT_HEADER:
            (size,) = unpack_wt_len(buf, pos)
            if size > self.hard_limit:
                # Also catches a client setting the datagram-record bit: such
                # a length is >= 2**31.
                raise FrameTooBig(size, self.hard_limit)
            stop = pos + WT_HEADER + size
            if stop > end:
                break
            frames.append(bytes(buf[pos + WT_HEADER:stop]))
            pos = stop
        if pos:
            del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held (non-zero at a stream's end
        means the peer cut a frame short)."""
        return len(self._buf)


def split_records(data: bytes) -> tuple[bytes, list[bytes]]:
    """(stream bytes, datagram payloads) of what the hub wrote to a sink.

    The common case, one stream frame and nothing else, costs one header
    read and no copy."""
    (first,) = unpack_wt_len(data, 0)
    if not first & WT_DATAGRAM_FLAG and first + WT_HEADER == len(data):
        return data, []
    stream: list[bytes] = []
    datagrams: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        (head,) = unpack_wt_len(data, pos)
        size = head & ~WT_DATAGRAM_FLAG
        stop = pos + WT_HEADER + size
        if head & WT_DATAGRAM_FLAG:
            datagrams.append(data[pos + WT_HEADER:stop])
        else:
            stream.append(data[pos:stop])
        pos = stop
    return b"".join(stream), datagrams
