"""The two codecs (msgpack and JSON) and the four wire variants.

A client speaks msgpack (binary WebSocket frames) or JSON (text frames); its
first frame (``hello``) fixes the variant for the whole connection, and the
server answers in that variant. A WebTransport session carries the same
payloads length-prefixed (``wire.webtransport``): WT_MSGPACK or WT_JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import msgpack

MSGPACK: Final = "msgpack"
JSON: Final = "json"
# The same payloads on a WebTransport session, length-prefixed on its stream
# (wire.webtransport); their codec is ``codec_of(variant)``.
WT_MSGPACK: Final = "wt-msgpack"
WT_JSON: Final = "wt-json"

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


def encode(obj: Mapping[str, Any], variant: str) -> bytes:
    return encode_msgpack(obj) if variant == MSGPACK else encode_json(obj)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_json(data: bytes | str) -> Any:
    """Strict JSON: NaN and Infinity are refused (ValueError), as browsers do."""
    return json.loads(data, parse_constant=_reject_constant)


def codec_of(variant: str) -> str:
    """The encoding (MSGPACK or JSON) of a wire variant."""
    return MSGPACK if variant == MSGPACK or variant == WT_MSGPACK else JSON
