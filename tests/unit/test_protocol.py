"""The wire protocol (wire/): codecs, pre-built frames, error and close codes."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.close_codes import CloseCode, close_advice
from wire.codecs import JSON, MSGPACK
from wire.decode import decode_frame
from wire.encoded import Encoded
from wire.errors import ERROR_SPECS, BadFrame, LiveroomError, MissingField, UnknownType
from wire.websocket import OP_BINARY, OP_TEXT, ws_close_frame, ws_frame


def parse_ws_frame(frame: bytes) -> tuple[int, bytes]:
    """A minimal RFC 6455 reader for server (unmasked) frames."""
    assert frame[0] & 0x80  # FIN
    opcode = frame[0] & 0x0F
    assert not frame[1] & 0x80  # a server never masks
    n = frame[1] & 0x7F
    offset = 2
    if n == 126:
        n = int.from_bytes(frame[2:4], "big")
        offset = 4
    elif n == 127:
        n = int.from_bytes(frame[2:10], "big")
        offset = 10
    payload = frame[offset:]
    assert len(payload) == n
    return opcode, payload


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_ws_frame_lengths(size: int) -> None:
    payload = b"x" * size
    assert parse_ws_frame(ws_frame(payload, OP_BINARY)) == (OP_BINARY, payload)


def test_close_frame_carries_code_and_a_bounded_reason() -> None:
    opcode, payload = parse_ws_frame(ws_close_frame(4100, "slow" * 100))
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 4100
    assert len(payload) <= 125


values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=20)


@given(st.dictionaries(st.text(max_size=8), values, max_size=5))
def test_both_variants_carry_the_same_message(body) -> None:
    obj = {"type": "action", "kind": "x", "body": body}
    enc = Encoded(obj)
    op_m, pm = parse_ws_frame(enc.frame(MSGPACK))
    op_j, pj = parse_ws_frame(enc.frame(JSON))
    assert (op_m, op_j) == (OP_BINARY, OP_TEXT)
    assert msgpack.unpackb(pm, raw=False) == json.loads(pj) == obj
    assert enc.frame(MSGPACK) is enc.frame(MSGPACK)  # encoded and framed once


def test_from_msgpack_reuses_the_payload() -> None:
    payload = msgpack.packb({"type": "state", "total": 3})
    enc = Encoded.from_msgpack(payload, 4)  # type: ignore[arg-type]
    assert parse_ws_frame(enc.frame(MSGPACK))[1] == payload
    assert json.loads(parse_ws_frame(enc.frame(JSON))[1]) == {"type": "state", "total": 3}


@pytest.mark.parametrize("data, variant, error", [
    (b"\xc1", MSGPACK, BadFrame),
    (b"\x93\x01\x02\x03", MSGPACK, BadFrame),  # a list, not a map
    ("{not json", JSON, BadFrame),
    ("42", JSON, BadFrame),
    ('{"no": "type"}', JSON, MissingField),
    ('{"type": "teleport"}', JSON, UnknownType),
    (msgpack.packb({1: "int key"}), MSGPACK, BadFrame),
    (b"\x81\xa4type\xa5hello" + b"junk", MSGPACK, BadFrame),  # trailing bytes
])
def test_decode_errors(data, variant, error) -> None:
    with pytest.raises(error):
        decode_frame(data, variant)


@given(st.binary(max_size=64))
def test_decoding_arbitrary_bytes_never_raises_anything_but_our_errors(data) -> None:
    try:
        decode_frame(data, MSGPACK)
    except LiveroomError:
        pass


def test_every_error_code_has_a_class_with_that_code() -> None:
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)
    codes = {c.code for c in subclasses(LiveroomError) if "code" in c.__dict__}
    assert codes == set(ERROR_SPECS)


def test_close_code_ranges_say_what_to_do() -> None:
    assert close_advice(CloseCode.AUTH_FAILED) == "give_up"
    assert close_advice(CloseCode.SLOW_CONSUMER) == "reconnect"
    assert close_advice(CloseCode.GOING_AWAY) == "reconnect"
    assert close_advice(CloseCode.TOKEN_EXPIRED) == "renew_token"
    assert close_advice(CloseCode.NORMAL) == "give_up"
