"""The two codecs (msgpack and JSON) and the four wire variants (``Variant``).

A client speaks msgpack (binary WebSocket frames) or JSON (text frames); its
first frame (``hello``) fixes the variant for the whole connection, and the
server answers in that variant. A WebTransport session carries the same
payloads length-prefixed (``wire.webtransport``): WT_MSGPACK or WT_JSON.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any, Final

import msgpack


class Variant(enum.StrEnum):
    """How a connection's frames go: the codec, and for WebTransport the
    stream framing. String-valued, so the protocol's names stay what they
    were (``welcome.codec`` is ``"msgpack"`` or ``"json"``, a metric label or
    a log line reads the same, and a member equals its string). Members are
    singletons: the per-connection paths (``wire.encoded``) tell them apart
    by identity, which costs less than comparing strings, so a connection's
    variant must be a member (``EdgeNode.receive`` makes it one)."""

    MSGPACK = "msgpack"
    JSON = "json"
    # The same payloads on a WebTransport session, length-prefixed on its
    # stream (wire.webtransport); their codec is ``codec_of(variant)``.
    WT_MSGPACK = "wt-msgpack"
    WT_JSON = "wt-json"


# The short names the rest of the code spells variants (and codecs) by.
MSGPACK: Final = Variant.MSGPACK
JSON: Final = Variant.JSON
WT_MSGPACK: Final = Variant.WT_MSGPACK
WT_JSON: Final = Variant.WT_JSON

_packb = msgpack.Packer(use_bin_type=True).pack
# allow_nan=False: NaN/Infinity are not JSON. Every value a client or the
# backend hands in passed the value rule at decode (``check_fields``), so no
# encoder here ever raises for one, least of all inside a fan-out loop.
_json_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                               allow_nan=False).encode


def encode_msgpack(obj: Mapping[str, Any]) -> bytes:
    out: bytes = _packb(obj)
    return out


def encode_json(obj: Mapping[str, Any]) -> bytes:
    return _json_dumps(obj).encode()


def encode(obj: Mapping[str, Any], variant: Variant) -> bytes:
    return encode_msgpack(obj) if variant == MSGPACK else encode_json(obj)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_json(data: bytes | str) -> Any:
    """Strict JSON: NaN and Infinity are refused (ValueError), as browsers do."""
    return json.loads(data, parse_constant=_reject_constant)


def codec_of(variant: Variant) -> Variant:
    """The encoding (MSGPACK or JSON) of a wire variant."""
    return MSGPACK if variant == MSGPACK or variant == WT_MSGPACK else JSON
