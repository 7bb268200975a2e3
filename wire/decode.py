"""Decoding what a client sends: one frame or one HTTP body, checked once.

``decode_frame`` turns bytes into a frame map and checks every field by the
value rule; the field accessors below raise the documented error for a field
that is missing or of the wrong shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import msgpack

from wire.codecs import MSGPACK, Variant, codec_of, loads_json
from wire.errors import BadFrame, InvalidField, MissingField, UnknownType
from wire.frames import CLIENT_FRAME_TYPES

# --------------------------------------------------------------------------
# The value rule. A value a client or the backend sends may be passed on to
# others (an action body to a room, a state value to every later joiner, a
# peer body, a ping's ``t`` and a ``ref`` echoed back), in either encoding,
# from deep inside the server's own frames and call stack. So every field of
# every frame and HTTP body is checked once, where it is decoded, by one walk:
# - depth: at most MAX_VALUE_DEPTH levels of containers inside the field
#   (a scalar is depth 0, ``[1]`` is 1). The frame's own map does not count,
#   so a value's limit is the same whichever frame carries it; the server's
#   frames add at most 4 levels around it (a batch, its list, a ``joined``'s
#   ``sections`` list and section map), far from any encoder's recursion limit;
# - size: at most ``max_value_bytes`` (EdgeConfig) in its msgpack encoding,
#   the form the bus, the stores and the inbox hold (JSON spends at most 6
#   bytes per msgpack byte: an escaped control character);
# - type: what msgpack *and* JSON carry: maps with string keys, lists,
#   strings of valid Unicode (no lone surrogates, which JSON escapes allow),
#   ints of 64 bits (-2**63 .. 2**64-1), finite floats, booleans, null; no
#   msgpack bin or extension values.
# A value that passed encodes in both variants, at any point after; one that
# did not is ``invalid_field`` with ``field`` (and ``limit`` for depth and
# size). The walk is iterative (level by level), so a value nested a
# thousand deep cannot exhaust the stack that checks it.
# --------------------------------------------------------------------------
MAX_VALUE_DEPTH: Final = 32
DEFAULT_MAX_VALUE_BYTES: Final = 64 * 1024
_INT_MIN: Final = -(1 << 63)
_INT_MAX: Final = (1 << 64) - 1


def _int_size(v: int) -> int:
    """The msgpack size of an int in the 64-bit range."""
    if -32 <= v < 128:
        return 1
    if v >= 0:
        return 2 if v < 0x100 else 3 if v < 0x10000 else 5 if v < 0x1_0000_0000 else 9
    return 2 if v >= -0x80 else 3 if v >= -0x8000 else 5 if v >= -0x8000_0000 else 9


def value_fault(value: Any, max_bytes: int) -> tuple[str, int | None] | None:
    """None when ``value`` obeys the value rule, else (why, the limit broken
    or None for a type). The walk goes level by level (no recursion) and
    sums the value's msgpack size on the way."""
    size = 0
    level = [value]
    for depth in range(MAX_VALUE_DEPTH + 1):
        deeper: list[Any] = []
        for v in level:
            t = type(v)
            if t is str:
                if v.isascii():  # O(1) in CPython: the flag is kept on the object
                    n = len(v)
                else:
                    try:
                        n = len(v.encode())
                    except UnicodeEncodeError:
                        return "a string that is not valid Unicode (a lone surrogate)", None
                size += n + (1 if n < 32 else 2 if n < 0x100 else 3 if n < 0x10000 else 5)
            elif t is dict:
                if depth == MAX_VALUE_DEPTH:
                    return f"nested more than {MAX_VALUE_DEPTH} levels deep", MAX_VALUE_DEPTH
                n = len(v)
                size += 1 if n < 16 else 3 if n < 0x10000 else 5
                for k in v:
                    if type(k) is not str:
                        return "map keys must be strings", None
                deeper.extend(v)  # the keys, sized as strings
                deeper.extend(v.values())
            elif t is list:
                if depth == MAX_VALUE_DEPTH:
                    return f"nested more than {MAX_VALUE_DEPTH} levels deep", MAX_VALUE_DEPTH
                n = len(v)
                size += 1 if n < 16 else 3 if n < 0x10000 else 5
                deeper.extend(v)
            elif t is int:
                if not _INT_MIN <= v <= _INT_MAX:
                    return "an integer outside the 64-bit range", None
                size += _int_size(v)
            elif t is float:
                if v - v != 0.0:  # inf - inf and nan - nan are nan
                    return "NaN or an infinite float", None
                size += 9
            elif v is None or t is bool:
                size += 1
            else:
                return f"a {t.__name__} value (msgpack bin or extension?)", None
        if size > max_bytes:
            return f"larger than {max_bytes} bytes", max_bytes
        if not deeper:
            return None
        level = deeper
    return None  # unreachable: containers at the last level were refused


def check_fields(obj: Mapping[Any, Any], max_value_bytes: int) -> None:
    """The value rule for every field of a decoded frame or HTTP body:
    BadFrame for a key that is not a string, else InvalidField naming the
    first field that breaks the rule. The offending frame's ``ref`` is
    echoed only if the ``ref`` itself passed."""
    # Most fields are short ASCII strings and small ints (type, room, kind,
    # ref): decided here without a walk (which stays the one rule: these
    # are the cases it would pass).
    short = min(max_value_bytes - 3, 0xFFFF)
    for name, value in obj.items():
        if type(name) is not str:
            raise BadFrame("the keys of a frame must be strings")
        t = type(value)
        if t is str:
            if len(value) <= short and value.isascii():
                continue
        elif t is int and max_value_bytes >= 9 and _INT_MIN <= value <= _INT_MAX:
            continue
        fault = value_fault(value, max_value_bytes)
        if fault is not None:
            why, limit = fault
            # Echoed names and refs must obey the rule too: a name is echoed
            # if ASCII (it is ours then, or junk), a ref if it passed.
            field = name[:64] if name.isascii() else "?"
            extra: dict[str, Any] = {"field": field}
            if limit is not None:
                extra["limit"] = limit
            ref = None if name == "ref" else _ref_of(obj)
            if type(ref) is str and value_fault(ref, max_value_bytes) is not None:
                ref = None
            raise InvalidField(f"field {field!r}: {why}", ref=ref, **extra)


def decode_frame(data: bytes | str, variant: Variant,
                 max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> dict[str, Any]:
    """Decode one client frame and check every field by the value rule.
    Raises BadFrame (not a map, not decodable), InvalidField (a field breaks
    the value rule), MissingField (no ``type``) or UnknownType."""
    variant = codec_of(variant)  # WebTransport frames decode as their codec
    try:
        if variant == MSGPACK:
            # unpackb bounds every container and string by len(data), so a
            # small frame cannot claim a huge allocation.
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
        else:
            obj = loads_json(data)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError, RecursionError) as exc:
        raise BadFrame(f"cannot decode {variant}: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise BadFrame("a frame must be a map")
    check_fields(obj, max_value_bytes)
    ftype = obj.get("type")
    if ftype is None:
        raise MissingField("field 'type' is required", ref=_ref_of(obj))
    if not isinstance(ftype, str) or ftype not in CLIENT_FRAME_TYPES:
        raise UnknownType(f"unknown frame type {str(ftype)[:32]!r}", ref=_ref_of(obj))
    return obj


def decode_json_body(raw: bytes, max_value_bytes: int) -> dict[str, Any]:
    """An HTTP request body: a JSON object whose fields obey the value rule,
    as a frame's do. InvalidField (``field`` ``body``) when it is not a JSON
    object (nested past what the parser takes included)."""
    try:
        body = loads_json(raw)
    except (ValueError, RecursionError):
        raise InvalidField("the body must be JSON", field="body") from None
    if not isinstance(body, dict):
        raise InvalidField("the body must be a JSON object", field="body")
    check_fields(body, max_value_bytes)
    return body


def _ref_of(obj: Mapping[str, Any]) -> Any:
    ref = obj.get("ref")
    if isinstance(ref, str) or (type(ref) is int and _INT_MIN <= ref <= _INT_MAX):
        return ref
    return None


# --------------------------------------------------------------------------
# Field access for decoded client frames: each raises the documented error.
# --------------------------------------------------------------------------
def ref_of(frame: Mapping[str, Any]) -> Any:
    return _ref_of(frame)


def req_str(frame: Mapping[str, Any], name: str, *, max_len: int = 64,
            pattern: re.Pattern[str] | None = None) -> str:
    value = frame.get(name)
    if value is None:
        raise MissingField(f"field {name!r} is required", ref=_ref_of(frame), field=name)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise InvalidField(f"field {name!r} must be a string of 1..{max_len} chars",
                           ref=_ref_of(frame), field=name)
    if pattern is not None and not pattern.match(value):
        raise InvalidField(f"field {name!r} has invalid characters",
                           ref=_ref_of(frame), field=name)
    return value


def opt_versions(frame: Mapping[str, Any], name: str) -> dict[str, int]:
    """An optional map section -> partial version (non-negative ints)."""
    value = frame.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 256:
        raise InvalidField(f"field {name!r} must be a map of section to version",
                           ref=_ref_of(frame), field=name)
    for k, v in value.items():
        if not isinstance(k, str) or type(v) is not int or v < 0:
            raise InvalidField(f"field {name!r} must map section names to ints >= 0",
                               ref=_ref_of(frame), field=name)
    return value


def opt_int(frame: Mapping[str, Any], name: str, *, minimum: int = 0) -> int | None:
    value = frame.get(name)
    if value is None:
        return None
    if type(value) is not int or value < minimum:
        raise InvalidField(f"field {name!r} must be an int >= {minimum}",
                           ref=_ref_of(frame), field=name)
    return value
