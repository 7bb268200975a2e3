"""WebTransport framing, the WT wire variants of Encoded and batches, lossy
sections, the close capsule and the development certificate: pure, no loop."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import msgpack
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st

from edge.batch import Batch
from edge.certs import dev_cert, make_dev_cert
from edge.fanout import Budget, Conn
from edge.wt_framing import FrameReader, FrameTooBig, split_records
from wire.codecs import JSON, MSGPACK, WT_JSON, WT_MSGPACK, codec_of
from wire.decode import decode_frame
from wire.encoded import Encoded, batch_of
from wire.errors import BadFrame
from wire.frames import Priority
from wire.webtransport import (
    WT_DATAGRAM_FLAG,
    WT_DATAGRAM_MAX,
    is_lossy_section,
    wt_close_capsule,
    wt_datagram_record,
    wt_frame,
    wt_variant_of,
)


def state(section: str, partial: int, value: object = None) -> Encoded:
    return Encoded({"type": "state", "room": "r", "section": section, "partial": partial,
                    "total": partial, "value": value})


# --------------------------------------------------------------------------
# reading frames from stream pieces
# --------------------------------------------------------------------------
@given(st.lists(st.binary(max_size=300), max_size=20), st.data())
def test_reader_reassembles_any_split(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(wt_frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = FrameReader(hard_limit=1000)
    got: list[bytes] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        got += reader.feed(stream[start:cut])
        start = cut
    assert got == payloads
    assert reader.pending == 0


def test_reader_refuses_a_header_over_the_hard_limit_before_the_body() -> None:
    reader = FrameReader(hard_limit=100)
    assert reader.feed(wt_frame(b"x" * 100)) == [b"x" * 100]
    with pytest.raises(FrameTooBig) as exc:
        reader.feed((101).to_bytes(4, "big"))  # the header alone is enough
    assert exc.value.size == 101 and exc.value.limit == 100


def test_reader_refuses_the_datagram_bit_from_a_client() -> None:
    with pytest.raises(FrameTooBig):
        FrameReader(hard_limit=1 << 20).feed(wt_datagram_record(b"hi"))


def test_reader_keeps_an_incomplete_frame() -> None:
    reader = FrameReader(hard_limit=100)
    assert reader.feed(wt_frame(b"hello")[:-1]) == []
    assert reader.pending == 8
    assert reader.feed(b"o") == [b"hello"]


# --------------------------------------------------------------------------
# variants and codecs
# --------------------------------------------------------------------------
def test_variant_by_first_byte_and_codec() -> None:
    assert wt_variant_of(b'{"type":"ping"}') == WT_JSON
    assert wt_variant_of(b' {"type":"ping"}') == WT_JSON
    assert wt_variant_of(msgpack.packb({"type": "ping"})) == WT_MSGPACK
    assert wt_variant_of(b"") == WT_MSGPACK  # and decodes to bad_frame
    assert codec_of(WT_MSGPACK) == codec_of(MSGPACK) == MSGPACK
    assert codec_of(WT_JSON) == codec_of(JSON) == JSON
    assert decode_frame(b'{"type":"ping"}', WT_JSON) == {"type": "ping"}
    assert decode_frame(msgpack.packb({"type": "ping"}), WT_MSGPACK) == {"type": "ping"}
    with pytest.raises(BadFrame):
        decode_frame(b"", WT_MSGPACK)


def test_wt_frame_is_built_once_and_shared() -> None:
    enc = Encoded({"type": "action", "room": "r", "kind": "like", "body": {"count": 1}})
    f = enc.frame(WT_MSGPACK)
    assert f is enc.frame(WT_MSGPACK)  # the same object for every session
    assert f == wt_frame(enc.payload(MSGPACK))
    assert enc.payload(WT_MSGPACK) is enc.payload(MSGPACK)  # one msgpack encode
    j = enc.frame(WT_JSON)
    assert json.loads(j[4:]) == enc.obj
    # The WebSocket frames are untouched by the WebTransport ones.
    assert enc.frame(MSGPACK)[0] == 0x82 and enc.frame(JSON)[0] == 0x81


def test_lossy_message_is_a_datagram_record_unless_too_big() -> None:
    small = state("positions", 1, {"x": 1})
    small.lossy = True
    rec = small.frame(WT_MSGPACK)
    assert rec[0] & 0x80
    assert split_records(rec) == (b"", [small.payload(MSGPACK)])
    # WebSocket clients still get a plain, reliable frame.
    assert small.frame(MSGPACK)[0] == 0x82
    big = state("positions", 2, "x" * (WT_DATAGRAM_MAX + 1))
    big.lossy = True
    assert big.frame(WT_MSGPACK) == wt_frame(big.payload(MSGPACK))


def test_batch_keeps_lossy_messages_out_of_the_stream() -> None:
    action = Encoded({"type": "action", "room": "r", "kind": "comment", "body": {"t": 1}},
                     Priority.COMMENT)
    meta = state("meta", 1, {"title": "t"})
    pos = state("positions", 3, {"x": 3})
    pos.lossy = True
    for variant, codec in ((WT_MSGPACK, MSGPACK), (WT_JSON, JSON)):
        stream, datagrams = split_records(batch_of([action, pos, meta], variant))
        assert int.from_bytes(stream[:4], "big") + 4 == len(stream)
        payload = stream[4:]
        frame = msgpack.unpackb(payload) if codec == MSGPACK else json.loads(payload)
        assert frame == {"type": "batch", "frames": [action.obj, meta.obj]}
        assert datagrams == [pos.payload(codec)]
    # Only lossy messages: datagrams alone, nothing on the stream.
    assert split_records(batch_of([pos], WT_MSGPACK)) == (b"", [pos.payload(MSGPACK)])


def test_batch_frame_is_shared_by_every_quic_session_at_one_floor() -> None:
    class Sink:
        def __init__(self) -> None:
            self.out: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.out.append(data)

        def buffered(self) -> int:
            return 0

        def close(self, code: int, reason: str) -> None:
            pass

    batch = Batch([state("meta", 1), state("pinned", 1)])
    sinks = [Sink() for _ in range(3)]
    for i, sink in enumerate(sinks):
        conn = Conn(i, sink, Budget())
        conn.variant = WT_MSGPACK
        conn.deliver(batch, 0.0)
    assert sinks[0].out[0] is sinks[1].out[0] is sinks[2].out[0]


def test_split_records_fast_path_returns_the_same_bytes() -> None:
    f = wt_frame(b"abc")
    stream, datagrams = split_records(f)
    assert stream is f and datagrams == []
    mixed = wt_frame(b"a") + wt_datagram_record(b"dg") + wt_frame(b"b")
    assert split_records(mixed) == (wt_frame(b"a") + wt_frame(b"b"), [b"dg"])
    assert WT_DATAGRAM_FLAG == 1 << 31


def test_lossy_sections_by_base_name() -> None:
    bases = frozenset({"positions"})
    assert is_lossy_section("positions", bases)
    assert is_lossy_section("positions.bot1", bases)
    assert not is_lossy_section("position", bases)
    assert not is_lossy_section("meta", bases)
    assert not is_lossy_section("positions", frozenset())


def test_close_capsule() -> None:
    cap = wt_close_capsule(4100, "slow consumer")
    # type 0x2843 as a 2-byte varint, length, 32-bit code, reason
    assert cap[:2] == bytes((0x40 | 0x28, 0x43))
    assert cap[2] == 4 + len("slow consumer")
    assert int.from_bytes(cap[3:7], "big") == 4100 and cap[7:] == b"slow consumer"
    assert len(wt_close_capsule(4001, "x" * 5000)) == 2 + 2 + 4 + 1024


# --------------------------------------------------------------------------
# development certificate
# --------------------------------------------------------------------------
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def test_dev_cert_is_ecdsa_p256_short_lived_and_hashed(tmp_path: Path) -> None:
    info = make_dev_cert(tmp_path, ["localhost", "127.0.0.1"], NOW)
    cert = x509.load_pem_x509_certificate(info.cert.read_bytes())
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    span = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert span <= dt.timedelta(days=14)
    assert info.sha256 == hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert info.key.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError):
        make_dev_cert(tmp_path, ["localhost"], NOW, days=15)


def test_dev_cert_is_kept_then_renewed_near_its_end(tmp_path: Path) -> None:
    first = dev_cert(tmp_path, ["localhost"], NOW)
    assert dev_cert(tmp_path, ["localhost"], NOW + dt.timedelta(days=5)).sha256 == first.sha256
    renewed = dev_cert(tmp_path, ["localhost"], NOW + dt.timedelta(days=9, hours=1))
    assert renewed.sha256 != first.sha256


def test_transmit_queue_transmits_each_connection_once_per_tick() -> None:
    from typing import Any, cast

    from edge.quic import TransmitQueue

    class Loop:
        def __init__(self) -> None:
            self.soon: list[Any] = []

        def call_soon(self, fn: Any) -> object:
            self.soon.append(fn)
            return object()

    class Proto:
        def __init__(self) -> None:
            self.transmits = 0

        def transmit(self) -> None:
            self.transmits += 1

    loop = Loop()
    queue = TransmitQueue(cast(Any, loop))
    a, b = Proto(), Proto()
    for _ in range(10):  # ten writes to each of two connections in one tick
        queue.mark(cast(Any, a))
        queue.mark(cast(Any, b))
    assert len(loop.soon) == 1  # one flush scheduled
    loop.soon.pop()()
    assert (a.transmits, b.transmits, queue.transmits) == (1, 1, 2)
    queue.mark(cast(Any, a))  # the next tick schedules again
    assert len(loop.soon) == 1


def test_reader_buffers_a_trickled_frame_in_place() -> None:
    """Linear reassembly (issue 12, item 8): a frame sent a few bytes at a
    time is appended to one buffer, never copied whole per packet."""
    reader = FrameReader(1 << 20)
    frame = wt_frame(b"z" * 100_000)
    buf = reader._buf
    pos = 0
    while len(frame) - pos > 7:
        assert reader.feed(frame[pos:pos + 7]) == []
        assert reader._buf is buf
        pos += 7
    assert reader.pending == pos
    assert reader.feed(frame[pos:]) == [b"z" * 100_000]
    assert reader._buf is buf and reader.pending == 0
