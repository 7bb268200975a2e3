"""The value rule (wire/decode.py): depth, size and what both encodings
carry, checked once at decode; a value that passed encodes everywhere later."""

from __future__ import annotations

import json
import sys
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.batch import Batch
from tests.support import nested, pack
from wire.codecs import JSON, MSGPACK, WT_JSON, WT_MSGPACK
from wire.decode import (
    DEFAULT_MAX_VALUE_BYTES,
    MAX_VALUE_DEPTH,
    check_fields,
    decode_frame,
    decode_json_body,
    ref_of,
    value_fault,
)
from wire.encoded import Encoded, batch_of, encoded_error
from wire.errors import BadFrame, InvalidField
from wire.frames import Priority
from wire.outgoing import (
    RoomVersions,
    action_frame,
    joined_frame,
    peer_frame,
    pong_frame,
    state_frame,
)

VARIANTS = (MSGPACK, JSON, WT_MSGPACK, WT_JSON)




def encodes_in_both(value: Any) -> bool:
    """msgpack and JSON both carry ``value`` and give it back unchanged (the
    JSON encoder would turn an int key into a string: not unchanged)."""
    try:
        via_msgpack = msgpack.unpackb(pack(value), raw=False, strict_map_key=False)
        via_json = json.loads(json.dumps(value, allow_nan=False, ensure_ascii=False).encode())
    except (ValueError, TypeError, OverflowError, RecursionError):
        return False
    return bool(via_msgpack == value and via_json == value)


# Values of every kind a decoder can produce, the bad ones included.
scalars = (st.none() | st.booleans()
           | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=40)
           | st.sampled_from(["\ud800", "a\udfffb", "é" * 40, "x" * 300])
           | st.binary(max_size=8)
           | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)))
keys = st.text(max_size=8) | st.sampled_from([b"k", 1, "\ud800"])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(keys, inner, max_size=5), max_leaves=40)


@settings(max_examples=500)
@given(values)
def test_a_value_that_passes_encodes_in_both_variants_and_its_size_is_exact(value: Any) -> None:
    if value_fault(value, 1 << 30) is not None:
        return
    size = len(pack(value))
    # The size the walk sums is the msgpack size, to the byte.
    assert value_fault(value, size) is None
    assert value_fault(value, size - 1) is not None
    assert encodes_in_both(value)


@settings(max_examples=500)
@given(values)
def test_a_type_refusal_is_a_value_one_encoding_cannot_carry(value: Any) -> None:
    """The rule is no stricter than the encoders, but for depth and size."""
    fault = value_fault(value, 1 << 30)
    if fault is not None and fault[1] is None:
        assert not encodes_in_both(value)
    if fault is None:
        assert encodes_in_both(value)


@pytest.mark.parametrize("depth", [0, 1, MAX_VALUE_DEPTH])
def test_depth_up_to_the_limit_passes(depth: int) -> None:
    assert value_fault(nested(depth), DEFAULT_MAX_VALUE_BYTES) is None
    assert value_fault(nested(depth, {"k": "v"}) if depth < MAX_VALUE_DEPTH else nested(depth),
                       DEFAULT_MAX_VALUE_BYTES) is None


@pytest.mark.parametrize("depth", [MAX_VALUE_DEPTH + 1, 1000, 100_000])
def test_deeper_is_refused_without_touching_the_stack(depth: int) -> None:
    deep = nested(depth)
    mapped = nested(depth - 1, {"x": 1})

    def at_stack_depth(n: int) -> Any:
        # The walk runs fine even with the stack nearly used up.
        if n:
            return at_stack_depth(n - 1)
        return value_fault(deep, DEFAULT_MAX_VALUE_BYTES), value_fault(
            mapped, DEFAULT_MAX_VALUE_BYTES)

    room = sys.getrecursionlimit() - 60
    for fault in at_stack_depth(room):
        assert fault is not None and fault[1] == MAX_VALUE_DEPTH


def test_size_limit_counts_every_container_and_string() -> None:
    value = {"items": ["x" * 10] * 100}
    size = len(pack(value))
    assert value_fault(value, size) is None
    why, limit = value_fault(value, size - 1) or ("", None)
    assert limit == size - 1 and "larger" in why


# --------------------------------------------------------------------------
# at decode: every field, the documented errors
# --------------------------------------------------------------------------
def test_decode_frame_refuses_a_deep_field_with_field_limit_and_ref() -> None:
    data = pack({"type": "ping", "t": nested(MAX_VALUE_DEPTH + 1), "ref": "r1"})
    with pytest.raises(InvalidField) as info:
        decode_frame(data, MSGPACK)
    frame = info.value.to_frame()
    assert frame["code"] == "invalid_field" and frame["field"] == "t"
    assert frame["limit"] == MAX_VALUE_DEPTH and frame["ref"] == "r1"


def test_msgpack_nested_past_the_packer_is_still_our_error() -> None:
    data = b"\x82\xa4type\xa4ping\xa1t" + b"\x91" * 980 + b"\x01"
    with pytest.raises(InvalidField):
        decode_frame(data, MSGPACK)
    with pytest.raises(BadFrame):  # past msgpack's own stack limit
        decode_frame(b"\x82\xa4type\xa4ping\xa1t" + b"\x91" * 5000 + b"\x01", MSGPACK)


@pytest.mark.parametrize("text", [
    '{"type": "ping", "t": 1e999}',
    '{"type": "ping", "t": -1e999}',
    '{"type": "ping", "t": "\\ud800"}',
    '{"type": "ping", "t": {"\\ud800": 1}}',
    '{"type": "ping", "t": 18446744073709551616}',
    '{"type": "ping", "t": -9223372036854775809}',
])
def test_json_values_msgpack_or_utf8_cannot_carry(text: str) -> None:
    with pytest.raises(InvalidField) as info:
        decode_frame(text, JSON)
    assert info.value.extra["field"] == "t"


def test_limits_of_the_64_bit_range_pass() -> None:
    frame = decode_frame('{"type": "ping", "t": [18446744073709551615, -9223372036854775808]}',
                         JSON)
    assert encodes_in_both(frame)


def test_a_bad_ref_is_refused_and_never_echoed() -> None:
    for text in ('{"type": "ping", "ref": 1180591620717411303424}',
                 '{"type": "ping", "t": 1e999, "ref": "\\ud800"}',
                 '{"ref": "\\udc00", "type": "ping", "t": [1e999]}'):
        with pytest.raises(InvalidField) as info:
            decode_frame(text, JSON)
        err = info.value
        assert err.ref is None
        assert encodes_in_both(err.to_frame())
        for variant in VARIANTS:
            encoded_error(err).frame(variant)


def test_a_non_ascii_field_name_is_not_echoed() -> None:
    with pytest.raises(InvalidField) as info:
        decode_frame('{"type": "ping", "\\ud800": 1e999}', JSON)
    assert info.value.extra["field"] == "?"
    encoded_error(info.value).frame(JSON)


def test_frame_keys_must_be_strings() -> None:
    with pytest.raises(BadFrame):
        check_fields({b"type": "ping"}, DEFAULT_MAX_VALUE_BYTES)


def test_http_body_same_rule() -> None:
    with pytest.raises(InvalidField) as info:
        decode_json_body(b'{"value": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                         DEFAULT_MAX_VALUE_BYTES)
    assert info.value.extra["field"] in ("body", "value")
    with pytest.raises(InvalidField) as info:
        decode_json_body(b'{"value": 1e999}', DEFAULT_MAX_VALUE_BYTES)
    assert info.value.extra["field"] == "value"
    assert decode_json_body(b'{"value": [1]}', DEFAULT_MAX_VALUE_BYTES) == {"value": [1]}


# --------------------------------------------------------------------------
# every place a client's or the backend's value is encoded later
# --------------------------------------------------------------------------
def _server_frames(value: Any, ref: Any) -> list[dict[str, Any]]:
    """The server frames that carry a client's value: an action's body, a
    state change's value (pushed, and in joined/sync), a peer body, a
    pong's ``t`` and an error's ``ref``."""
    sender = {"id": "u", "name": "u", "role": "viewer"}
    return [
        action_frame("r", "blob", value, sender, 1, 1.0, "a-1"),
        state_frame("r", "s", 1, 1, value),
        joined_frame(RoomVersions("r", "e", 1, {"s": 1}, [("s", 1, value)]), None, 1, None),
        peer_frame(1, 0, "v", "u", "u", "m", value, 1.0),
        pong_frame(value, 1.0, ref),
        InvalidField("x", ref=ref, field="f").to_frame(),
    ]


@settings(max_examples=300)
@given(values, st.none() | st.integers(-(2**70), 2**70) | st.text(max_size=5)
       | st.sampled_from(["\ud800"]))
def test_every_server_frame_carrying_a_value_that_passed_encodes_everywhere(
        value: Any, ref: Any) -> None:
    frame = {"type": "ping", "t": value, "ref": ref}
    try:
        checked = decode_frame(pack(frame), MSGPACK) if encodes_in_both(frame) else None
    except (InvalidField, BadFrame):
        checked = None
    if checked is None:
        try:
            check_fields(frame, DEFAULT_MAX_VALUE_BYTES)
        except (InvalidField, BadFrame):
            return
    messages = [Encoded(f, Priority.COMMENT) for f in _server_frames(value,
                                                                     ref_of(frame))]
    for variant in VARIANTS:
        for m in messages:
            m.frame(variant)
        batch_of(messages, variant)
        Batch(messages).frame_from(Priority.LIKE, variant)


def test_a_value_at_the_limits_encodes_deep_in_the_stack() -> None:
    """MAX_VALUE_DEPTH levels inside the deepest server frame (a batch of
    ``joined`` replies), encoded with the stack nearly used up: the margin
    that a thousand levels did not leave (issue 12, item 1)."""
    value = nested(MAX_VALUE_DEPTH - 1, {"k": "v" * 10})
    assert value_fault(value, DEFAULT_MAX_VALUE_BYTES) is None
    messages = [Encoded(f) for f in _server_frames(value, 7)]

    def at_stack_depth(n: int) -> None:
        if n:
            at_stack_depth(n - 1)
            return
        for variant in VARIANTS:
            batch_of(messages, variant)

    at_stack_depth(sys.getrecursionlimit() - 120)


def test_a_token_name_the_encoders_cannot_carry_is_refused() -> None:
    """The name claim goes out in every action of the user (``from``)."""
    import time

    from edge.auth import mint_token, verify_token
    from wire.errors import Unauthorized

    secret = "s" * 32
    now = time.time()
    with pytest.raises(Unauthorized):
        verify_token(mint_token(secret, "u1", "a\ud800", "viewer", now, 60), secret, now)
    ident = verify_token(mint_token(secret, "u1", "Zoë 🎉", "viewer", now, 60), secret, now)
    Encoded(action_frame("r", "comment", {"text": "hi"}, ident.public(), 1, now, "a-1")).frame(JSON)


def test_a_token_name_of_64_four_byte_characters_is_accepted() -> None:
    """The name bound is 64 characters, not a byte count: 64 emoji (256 bytes
    of UTF-8) are a valid name, as they were before the value rule."""
    import time

    from edge.auth import mint_token, verify_token

    secret = "s" * 32
    now = time.time()
    name = "\U0001F600" * 64
    assert verify_token(mint_token(secret, "u1", name, "viewer", now, 60), secret, now).name == name
