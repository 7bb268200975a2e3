"""The server side of RFC 6455, pure: the upgrade check and answer, and the
client-frame parser (masking, fragmentation, control frames, limits), under
any split of the byte stream."""

from __future__ import annotations

import base64
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.ws_framing import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ClientFrames,
    WsProtocolError,
    handshake_response,
    upgrade_key,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example


def client_frame(payload: bytes, op: int, *, fin: bool = True, mask: bytes | None = None,
                 rsv: int = 0, masked: bool = True) -> bytes:
    """A client frame as a browser sends it (masked)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | op
    mbit = 0x80 if masked else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not masked:
        return head + payload
    m = mask if mask is not None else os.urandom(4)
    return head + m + bytes(b ^ m[i % 4] for i, b in enumerate(payload))


def head(*lines: str, target: str = "/ws") -> bytes:
    return "\r\n".join([f"GET {target} HTTP/1.1", *lines]).encode()


GOOD = ("Host: x", "Upgrade: websocket", "Connection: keep-alive, Upgrade",
        "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {KEY}")


def test_the_rfc_example_handshake() -> None:
    assert upgrade_key(head(*GOOD), "/ws") == KEY
    assert upgrade_key(head(*GOOD, target="/ws?codec=msgpack"), "/ws") == KEY
    # RFC 6455 section 1.3: this key's accept value.
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in handshake_response(KEY)
    assert handshake_response(KEY).startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert handshake_response(KEY).endswith(b"\r\n\r\n")
    assert b"Extensions" not in handshake_response(KEY)


@pytest.mark.parametrize("request_head", [
    head(*GOOD, target="/wsx"),
    head(*GOOD, target="/"),
    head(*GOOD).replace(b"GET", b"POST"),
    head(*GOOD).replace(b"HTTP/1.1", b"HTTP/1.0"),
    head(*(h for h in GOOD if not h.startswith("Upgrade"))),
    head(*(h for h in GOOD if not h.startswith("Connection")), "Connection: keep-alive"),
    head(*GOOD).replace(b"Version: 13", b"Version: 8"),
    head(*GOOD).replace(KEY.encode(), b"c2hvcnQ="),       # 5 bytes, not 16
    head(*GOOD).replace(KEY.encode(), b"not base64!!"),
    head(*GOOD, "Sec-WebSocket-Key: " + KEY),            # repeated
    head(*GOOD, " folded continuation"),
    head(*GOOD, "no colon here"),
])
def test_anything_else_is_not_an_upgrade(request_head: bytes) -> None:
    assert upgrade_key(request_head, "/ws") is None


def test_messages_and_control_frames_come_out_unmasked() -> None:
    p = ClientFrames(1 << 20)
    data = (client_frame(b'{"type":"hello"}', OP_TEXT) + client_frame(b"\x81\xa1a", OP_BINARY)
            + client_frame(b"hb", OP_PING) + client_frame(b"", OP_PONG)
            + client_frame(b"x" * 300, OP_BINARY) + client_frame(b"y" * 70000, OP_BINARY)
            + client_frame(b"\x03\xe8bye", OP_CLOSE))
    assert p.feed(data) == [(OP_TEXT, b'{"type":"hello"}'), (OP_BINARY, b"\x81\xa1a"),
                            (OP_PING, b"hb"), (OP_PONG, b""), (OP_BINARY, b"x" * 300),
                            (OP_BINARY, b"y" * 70000), (OP_CLOSE, b"\x03\xe8bye")]


def test_fragments_are_joined_and_controls_pass_between_them() -> None:
    p = ClientFrames(1000)
    data = (client_frame(b"ab", OP_TEXT, fin=False) + client_frame(b"", OP_PING)
            + client_frame(b"cd", 0, fin=False) + client_frame(b"e", 0))
    assert p.feed(data) == [(OP_PING, b""), (OP_TEXT, b"abcde")]
    assert p.feed(client_frame(b"f", OP_BINARY)) == [(OP_BINARY, b"f")]


@given(st.lists(st.tuples(st.binary(max_size=300), st.sampled_from([OP_TEXT, OP_BINARY]),
                          st.integers(1, 3)), max_size=8),
       st.lists(st.integers(1, 50), min_size=1, max_size=40))
def test_any_split_of_the_stream_parses_the_same(
        messages: list[tuple[bytes, int, int]], cuts: list[int]) -> None:
    stream = b""
    for payload, op, parts in messages:
        size = max(1, len(payload) // parts)
        chunks = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
        for i, chunk in enumerate(chunks):
            stream += client_frame(chunk, op if i == 0 else 0, fin=i == len(chunks) - 1)
    p = ClientFrames(1 << 20)
    got: list[tuple[int, bytes]] = []
    pos, k = 0, 0
    while pos < len(stream):
        step = cuts[k % len(cuts)]
        got += p.feed(stream[pos:pos + step])
        pos += step
        k += 1
    assert got == [(op, payload) for payload, op, _ in messages]


@pytest.mark.parametrize(("data", "code"), [
    (client_frame(b"x", OP_TEXT, masked=False), 1002),
    (client_frame(b"x", OP_TEXT, rsv=0x40), 1002),           # RSV1: no deflate here
    (client_frame(b"x", 0x3), 1002),                         # reserved data opcode
    (client_frame(b"x", 0xB), 1002),                         # reserved control opcode
    (client_frame(b"x" * 126, OP_PING), 1002),               # control over 125 bytes
    (client_frame(b"x", OP_PING, fin=False), 1002),          # fragmented control
    (client_frame(b"x", 0), 1002),                           # continuation of nothing
    (client_frame(b"a", OP_TEXT, fin=False) + client_frame(b"b", OP_TEXT), 1002),
    (client_frame(b"x" * 101, OP_BINARY), 1009),
    (client_frame(b"x" * 60, OP_BINARY, fin=False) + client_frame(b"x" * 60, 0), 1009),
])
def test_violations_name_their_close_code(data: bytes, code: int) -> None:
    with pytest.raises(WsProtocolError) as err:
        ClientFrames(100).feed(data)
    assert err.value.code == code


def test_too_big_is_refused_from_the_header_alone() -> None:
    """A 1 GB frame is refused when its 10-byte header (and mask) arrive."""
    header = struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 30)
    p = ClientFrames(1 << 20)
    assert p.feed(header[:5]) == []
    with pytest.raises(WsProtocolError) as err:
        p.feed(header[5:])
    assert err.value.code == 1009


def test_an_idle_parser_keeps_nothing() -> None:
    p = ClientFrames(1000)
    p.feed(client_frame(b"hello", OP_TEXT))
    assert p._buf is None and p._parts is None and p.pending == 0
    assert base64.b64decode(KEY)  # the fixture key is valid base64


def test_fragments_per_message_are_capped() -> None:
    """Empty fragments cost nothing against the size limit, so their number
    is capped: the fragment past the cap closes with 1009 (issue 12, item 8:
    a million empty continuations were held)."""
    from edge.ws_framing import MAX_FRAGMENTS

    p = ClientFrames(1 << 20)
    empty = client_frame(b"", 0, fin=False)
    p.feed(client_frame(b"a", OP_TEXT, fin=False))
    with pytest.raises(WsProtocolError) as err:
        for _ in range(100_000):
            p.feed(empty * 100)
    assert err.value.code == 1009
    assert p._parts is not None and len(p._parts) <= MAX_FRAGMENTS
    # Up to the cap, a message in many pieces is whole.
    q = ClientFrames(1 << 20, max_fragments=8)
    pieces = [client_frame(b"x", OP_BINARY, fin=False)]
    pieces += [client_frame(b"", 0, fin=False)] * 6 + [client_frame(b"y", 0)]
    assert q.feed(b"".join(pieces)) == [(OP_BINARY, b"xy")]
    with pytest.raises(WsProtocolError):
        q.feed(b"".join([pieces[0], *pieces[1:-1], pieces[1], pieces[-1]]))


def test_a_frame_trickled_in_small_pieces_is_buffered_in_place() -> None:
    """Reassembly is linear: an unfinished frame's bytes are appended to one
    buffer, never copied whole on each packet (which was quadratic: a 256 KB
    frame sent 7 bytes at a time copied ~4.7 GB)."""
    p = ClientFrames(1 << 20)
    frame = client_frame(b"z" * 200_000, OP_BINARY)
    assert p.feed(frame[:10]) == []
    buf = p._buf
    assert buf is not None
    pos = 10
    while len(frame) - pos > 7:
        assert p.feed(frame[pos:pos + 7]) == []
        assert p._buf is buf, "the unfinished frame was copied into a new buffer"
        pos += 7
    assert p.pending == pos
    assert p.feed(frame[pos:]) == [(OP_BINARY, b"z" * 200_000)]
    assert p._buf is None and p.pending == 0
