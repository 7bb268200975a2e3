"""The liveroom wire protocol: the one module that says what goes over the wire.

Theory of operation
-------------------
Every frame is a map whose ``type`` field names it. A client speaks either
msgpack (binary WebSocket frames) or JSON (text frames); the first frame it
sends (``hello``) fixes the variant for the whole connection, and the server
answers in that variant. The messages are the same in both.

This module is a leaf: it imports nothing else of liveroom, never touches a
socket and never awaits. It holds
- the frame type names and protocol version,
- the codecs (``decode_frame``, ``encode_msgpack``, ``encode_json``),
- pre-built WebSocket frames (``ws_frame``) so that one message is framed once
  and the same bytes go to every recipient (server frames are unmasked),
- ``Encoded``: one outgoing message with its two wire variants, built lazily,
- error codes and the one error hierarchy (``LiveroomError``), each code saying
  whose fault it is and what the client should do,
- close codes, whose ranges tell a client whether to reconnect,
- the WebTransport (QUIC) framing: length-prefixed frames on one stream, and
  the datagram records of lossy state (``wt_frame``, ``WT_MSGPACK``...).

``docs/PROTOCOL.md`` documents every frame and code defined here.
"""

from __future__ import annotations

import enum
import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import msgpack

PROTOCOL_VERSION: Final = 1

# Frame types. Client -> server: hello, join, leave, action, state, sync, peer,
# peer_ack, ping. Server -> client: welcome, joined, left, action, state, sync,
# peer, peer_ack, online, error, pong.
HELLO: Final = "hello"
WELCOME: Final = "welcome"
JOIN: Final = "join"
JOINED: Final = "joined"
LEAVE: Final = "leave"
LEFT: Final = "left"
ACTION: Final = "action"
STATE: Final = "state"
SYNC: Final = "sync"
PEER: Final = "peer"
PEER_ACK: Final = "peer_ack"
ONLINE: Final = "online"
ERROR: Final = "error"
PING: Final = "ping"
PONG: Final = "pong"

# Server -> client, added by the scale-out: ``redirect`` (this edge does not
# serve the room: connect to ``url`` and join there) and ``inbox`` (the peer
# inbox replay after a hello that reported an ``inbox_cursor`` is done).
REDIRECT: Final = "redirect"
INBOX: Final = "inbox"
# Why a redirect was sent: the join reached an edge of another group, or the
# room moved to another group while the client was in it (groups joined or left).
REDIRECT_NOT_OWNER: Final = "not_owner"
REDIRECT_MOVED: Final = "moved"

CLIENT_FRAME_TYPES: Final = frozenset(
    {HELLO, JOIN, LEAVE, ACTION, STATE, SYNC, PEER, PEER_ACK, PING}
)

# Action kinds with a meaning of their own; any other kind matching
# CUSTOM_KIND_RE is a custom kind, delivered as is.
COMMENT: Final = "comment"
GIFT: Final = "gift"
LIKE: Final = "like"
# An agent's words: token chunks of one reply (``reply_id``), then the whole
# reply with ``reply_to`` (docs/PROTOCOL.md, "Agents").
AGENT_DELTA: Final = "agent.delta"
AGENT_SAY: Final = "agent.say"
CUSTOM_KIND_RE: Final = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
# A section is a lower-case name with an optional ".<suffix>"; the suffix may
# be any user id, so that an agent can own "stage.<its user id>".
SECTION_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}(\.[A-Za-z0-9_.:@-]{1,64})?$")
ROOM_RE: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
USER_RE: Final = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")

ROLES: Final = ("viewer", "host", "moderator", "agent")


class Priority(enum.IntEnum):
    """Delivery priority of an outgoing message. Under backpressure the lowest
    class is shed first (like < comment < gift); CONTROL (state, peer, replies to
    the connection's own frames) is never shed: state heals through versions,
    but only if the frames that carry versions arrive."""

    LIKE = 1
    COMMENT = 2
    GIFT = 3
    CONTROL = 4


def action_priority(kind: str) -> Priority:
    if kind == GIFT:
        return Priority.GIFT
    if kind == LIKE:
        return Priority.LIKE
    # Comments and custom kinds (agent words included) rank as comments.
    return Priority.COMMENT


# --------------------------------------------------------------------------
# Close codes. The range tells the client what to do:
#   1000-1999  standard WebSocket codes (1000 normal, 1001 going away: reconnect,
#              1009 frame over the hard size cap: do not resend that frame,
#              1011 internal error: reconnect)
#   4000-4099  do not reconnect: the same request will fail the same way
#   4100-4199  reconnect after a backoff (with jitter); state resyncs by versions
#   4200-4299  get a new token, then reconnect
# --------------------------------------------------------------------------
class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    # The server failed this connection's transport (its write raised): reconnect.
    INTERNAL_ERROR = 1011
    AUTH_FAILED = 4001
    UNSUPPORTED_VERSION = 4003
    # The user already holds --max-conns-per-user connections on this edge.
    TOO_MANY_CONNECTIONS = 4004
    SLOW_CONSUMER = 4100
    SERVER_SHUTDOWN = 4101
    HELLO_TIMEOUT = 4102
    TOKEN_EXPIRED = 4200


def close_advice(code: int) -> str:
    """What a client should do after a close with ``code``."""
    if 4000 <= code < 4100:
        return "give_up"
    if 4100 <= code < 4200 or code == CloseCode.GOING_AWAY:
        return "reconnect"
    if 4200 <= code < 4300:
        return "renew_token"
    return "give_up" if code == CloseCode.NORMAL else "reconnect"


# --------------------------------------------------------------------------
# Errors. One hierarchy; every error has a wire code, says whose fault it is
# (client or server), whether it is temporary, and what the client should do
# (fix, retry, resync, renew_token, give_up).
# --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ErrorSpec:
    code: str
    fault: str  # "client" | "server"
    temporary: bool
    advice: str  # "fix" | "retry" | "resync" | "renew_token" | "give_up"
    http_status: int
    text: str


ERROR_SPECS: Final[Mapping[str, ErrorSpec]] = {
    s.code: s
    for s in (
        ErrorSpec("bad_frame", "client", False, "fix", 400,
                  "the frame is not valid msgpack/JSON or not a map"),
        ErrorSpec("unknown_type", "client", False, "fix", 400,
                  "the frame's type is not one the server accepts"),
        ErrorSpec("missing_field", "client", False, "fix", 400,
                  "a required field is missing"),
        ErrorSpec("invalid_field", "client", False, "fix", 400,
                  "a field has the wrong type or an invalid value"),
        ErrorSpec("frame_too_large", "client", False, "fix", 413,
                  "the frame is larger than the configured limit"),
        ErrorSpec("hello_required", "client", False, "fix", 400,
                  "the first frame on a connection must be hello"),
        ErrorSpec("already_authenticated", "client", False, "fix", 400,
                  "hello was sent twice on one connection"),
        ErrorSpec("unauthorized", "client", False, "renew_token", 401,
                  "the token is missing, forged, malformed or expired"),
        ErrorSpec("unsupported_version", "client", False, "give_up", 400,
                  "the protocol version is not supported"),
        ErrorSpec("forbidden", "client", False, "give_up", 403,
                  "the role of the user may not do this"),
        ErrorSpec("not_joined", "client", False, "fix", 409,
                  "the connection is not a member of that room"),
        ErrorSpec("too_many_rooms", "client", False, "fix", 429,
                  "the connection has joined the maximum number of rooms"),
        ErrorSpec("too_many_connections", "client", False, "fix", 429,
                  "the user holds the maximum number of connections on this edge"),
        ErrorSpec("too_many_sections", "client", False, "fix", 409,
                  "the room has the maximum number of sections; write one it has"),
        ErrorSpec("rate_limited", "client", True, "retry", 429,
                  "too many messages; retry after retry_after seconds"),
        # 429, not 507: the sender is asked to come back later, as for its
        # own rate; nothing is wrong with the server's storage.
        ErrorSpec("inbox_full", "client", True, "retry", 429,
                  "the addressee holds the most unacknowledged peer messages it may; "
                  "retry later"),
        ErrorSpec("version_conflict", "client", True, "resync", 409,
                  "the expected version is not the current one"),
        ErrorSpec("not_found", "client", False, "fix", 404,
                  "no such room, section or version"),
        ErrorSpec("unavailable", "server", True, "retry", 503,
                  "the server cannot serve this right now"),
        ErrorSpec("internal", "server", True, "retry", 500,
                  "the server failed; the request may be retried"),
        ErrorSpec("quota_exceeded", "client", True, "retry", 429,
                  "the token quota of the room or the user is used up for today"),
        ErrorSpec("model_unavailable", "server", True, "retry", 503,
                  "the character's model backend failed or its circuit breaker is open"),
    )
}


class LiveroomError(Exception):
    """Base of every error that reaches a client. ``code`` is a key of
    ERROR_SPECS; ``ref`` echoes the client's ``ref`` of the offending frame;
    ``extra`` carries structured fields (``retry_after``, ``current``...)."""

    code: str = "internal"

    def __init__(self, message: str = "", *, ref: Any = None,
                 http_headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        self.message = message or ERROR_SPECS[self.code].text
        self.ref = ref
        self.extra = extra
        # Headers for an HTTP answer (e.g. Cache-Control on a 404); not on the wire.
        self.http_headers = dict(http_headers or {})
        super().__init__(f"{self.code}: {self.message}")

    @property
    def spec(self) -> ErrorSpec:
        return ERROR_SPECS[self.code]

    def to_frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "type": ERROR,
            "code": self.code,
            "message": self.message,
            "advice": self.spec.advice,
        }
        if self.ref is not None:
            frame["ref"] = self.ref
        frame.update(self.extra)
        return frame

    def to_http(self) -> dict[str, Any]:
        body = self.to_frame()
        del body["type"]
        return body


class ClientError(LiveroomError):
    """The client sent something wrong; resending it unchanged will fail."""


class BadFrame(ClientError):
    code = "bad_frame"


class UnknownType(ClientError):
    code = "unknown_type"


class MissingField(ClientError):
    code = "missing_field"


class InvalidField(ClientError):
    code = "invalid_field"


class FrameTooLarge(ClientError):
    code = "frame_too_large"


class HelloRequired(ClientError):
    code = "hello_required"


class AlreadyAuthenticated(ClientError):
    code = "already_authenticated"


class Unauthorized(ClientError):
    code = "unauthorized"


class UnsupportedVersion(ClientError):
    code = "unsupported_version"


class Forbidden(ClientError):
    code = "forbidden"


class NotJoined(ClientError):
    code = "not_joined"


class TooManyRooms(ClientError):
    code = "too_many_rooms"


class TooManyConnections(ClientError):
    code = "too_many_connections"


class TooManySections(ClientError):
    """A write would give the room one section more than ``limit``."""

    code = "too_many_sections"


class RateLimited(ClientError):
    code = "rate_limited"


class InboxFull(ClientError):
    """A peer message the addressee's inbox has no room for (its cap of
    unacknowledged messages or bytes); nothing was stored."""

    code = "inbox_full"


class VersionConflict(ClientError):
    code = "version_conflict"


class NotFound(ClientError):
    code = "not_found"


class ServerError(LiveroomError):
    """The server failed or is overloaded; the client may retry later."""


class Unavailable(ServerError):
    code = "unavailable"


class InternalError(ServerError):
    code = "internal"


class QuotaExceeded(ClientError):
    """A character's token quota (per room or per user, per day) is used up;
    ``scope`` says which (``room`` | ``user``), ``retry_after`` when it resets."""

    code = "quota_exceeded"


class ModelUnavailable(ServerError):
    """A model backend failed (timeout, connection, bad stream) or its circuit
    breaker is open: the character goes quiet, the room does not."""

    code = "model_unavailable"


# --------------------------------------------------------------------------
# Codecs
# --------------------------------------------------------------------------
MSGPACK: Final = "msgpack"
JSON: Final = "json"

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


def decode_frame(data: bytes | str, variant: str,
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


# --------------------------------------------------------------------------
# URLs of the state for polling clients (served by cdn.origin). A versioned
# URL names one version of one store epoch, so its body never changes.
# --------------------------------------------------------------------------
def section_url(room: str, section: str, partial: int, epoch: str) -> str:
    return (f"/v1/rooms/{quote(room, safe='')}/sections/{quote(section, safe='')}"
            f"/v/{partial}?e={epoch}")


def snapshot_url(room: str, total: int, epoch: str) -> str:
    return f"/v1/rooms/{quote(room, safe='')}/snapshots/{total}?e={epoch}"


def head_url(room: str) -> str:
    return f"/v1/rooms/{quote(room, safe='')}/state"


# --------------------------------------------------------------------------
# Pre-built WebSocket frames (RFC 6455 section 5.2). A server frame is never
# masked, so one frame's bytes fit every recipient: build once, write N times.
# --------------------------------------------------------------------------
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
_FIN: Final = 0x80
_pack_h16 = struct.Struct("!BBH").pack
_pack_h64 = struct.Struct("!BBQ").pack


def ws_frame(payload: bytes, opcode: int) -> bytes:
    """One complete, unmasked, unfragmented, uncompressed WebSocket frame."""
    n = len(payload)
    first = _FIN | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return _pack_h16(first, 126, n) + payload
    return _pack_h64(first, 127, n) + payload


OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
# A frame continuing a fragmented message (only clients fragment: edge/ws_framing.py).
OP_CONT: Final = 0x0
_pack_close = struct.Struct("!H").pack


def ws_close_frame(code: int, reason: str) -> bytes:
    """A close frame; the reason is cut to fit the 125-byte control payload."""
    return ws_frame(_pack_close(code) + reason.encode()[:123], OP_CLOSE)


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
        # A state change of a lossy section (see is_lossy_section): QUIC
        # sessions take it as an unreliable datagram instead of stream data.
        self.lossy = False
        self._wt_frames: dict[str, bytes] | None = None
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

    def payload(self, variant: str) -> bytes:
        if variant == MSGPACK or variant == WT_MSGPACK:
            p = self._msgpack
            if p is None:
                p = self._msgpack = encode_msgpack(self.obj)
            return p
        p = self._json
        if p is None:
            p = self._json = encode_json(self.obj)
        return p

    def frame(self, variant: str) -> bytes:
        if variant == MSGPACK:
            f = self._msgpack_frame
            if f is None:
                f = self._msgpack_frame = ws_frame(self.payload(MSGPACK), OP_BINARY)
            return f
        if variant == JSON:
            f = self._json_frame
            if f is None:
                f = self._json_frame = ws_frame(self.payload(JSON), OP_TEXT)
            return f
        return self.wt_frame(variant)

    def wt_frame(self, variant: str) -> bytes:
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

    def frame_from(self, floor: Priority, variant: str) -> bytes | None:
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


def batch_frame(payloads: Sequence[bytes], variant: str) -> bytes:
    """One frame carrying ``payloads`` (encoded in ``variant``): a WebSocket
    frame, or a length-prefixed WebTransport frame for WT_MSGPACK/WT_JSON."""
    if variant == WT_MSGPACK or variant == WT_JSON:
        return wt_frame(_batch_payload(payloads, codec_of(variant)))
    return _ws_batch_frame(payloads, variant)


def _batch_payload(payloads: Sequence[bytes], codec: str) -> bytes:
    if codec == MSGPACK:
        n = len(payloads)
        if n < 16:
            head = bytes((0x90 | n,))
        elif n < 65536:
            head = _pack_u16(0xDC, n)
        else:
            head = _pack_u32(0xDD, n)
        return b"".join((_BATCH_MSGPACK_HEAD, head, *payloads))
    return b"".join((_BATCH_JSON_HEAD, b",".join(payloads), b"]}"))


def batch_of(messages: Sequence[Encoded], variant: str) -> bytes:
    """The one write for the messages of a tick. For WebTransport variants,
    lossy messages come out of the batch as datagram records (after the
    stream frame), so that a 30 Hz section never waits behind a lost packet."""
    if variant != WT_MSGPACK and variant != WT_JSON:
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


def _ws_batch_frame(payloads: Sequence[bytes], variant: str) -> bytes:
    if variant == MSGPACK:
        return ws_frame(_batch_payload(payloads, MSGPACK), OP_BINARY)
    return ws_frame(_batch_payload(payloads, JSON), OP_TEXT)


def action_frame(room: str, kind: str, body: Any, sender: Mapping[str, Any], seq: int,
                 ts: float) -> dict[str, Any]:
    """A stamped ``action`` as it goes on the bus and to the room's members
    (``seq``: the stamping node's counter for the room, see PROTOCOL.md)."""
    return {"type": ACTION, "room": room, "kind": kind, "body": body, "from": sender,
            "seq": seq, "ts": ts}


def redirect_frame(room: str, urls: Sequence[str], reason: str,
                   ref: Any = None) -> dict[str, Any]:
    """Join ``room`` at ``url`` instead (``urls``: fallbacks in order)."""
    frame: dict[str, Any] = {"type": REDIRECT, "room": room, "url": urls[0],
                             "urls": list(urls), "reason": reason}
    if ref is not None:
        frame["ref"] = ref
    return frame


def error_frame(err: LiveroomError) -> Encoded:
    return Encoded(err.to_frame())


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
WT_MSGPACK: Final = "wt-msgpack"
WT_JSON: Final = "wt-json"
WT_PATH: Final = "/wt"
WT_HEADER: Final = 4
WT_DATAGRAM_FLAG: Final = 0x8000_0000
# A datagram must fit one QUIC packet of the smallest size every path carries
# (1200 bytes) with the packet, frame and quarter-stream-id headers; larger
# lossy messages go on the stream.
WT_DATAGRAM_MAX: Final = 1100
_pack_wt_len = struct.Struct("!I").pack
unpack_wt_len = struct.Struct("!I").unpack_from


def codec_of(variant: str) -> str:
    """The encoding (MSGPACK or JSON) of a wire variant."""
    return MSGPACK if variant == MSGPACK or variant == WT_MSGPACK else JSON


def wt_variant_of(payload: bytes) -> str:
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


# WebTransport session close codes are the close codes above (CloseCode),
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
