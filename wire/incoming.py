"""The client's frames, typed: one frozen dataclass per client frame type,
and the parse functions that check its fields.

Theory of operation
-------------------
``decode.decode_frame`` turns bytes into a frame map checked by the value
rule; the parsers here turn that map into a typed frame, checking each field
(its presence, type, pattern, length and shape) and raising the documented
error (``MissingField``, ``InvalidField``, ``UnsupportedVersion``) with the
frame's ``ref``. They do no state checks: the phase, the frame budget,
membership, roles, the room limit and the rates are the session's
(``edge/session.py``), which calls these parsers at the points PROTOCOL.md's
order of checks puts them. Where that order puts a state check between two
field checks, the parse is split in two steps at that point:
- ``join``: ``parse_room``, ``parse_known``, (the room limit), ``parse_join``;
- ``state``: ``parse_room``, (membership), ``parse_state_target``, (the role),
  ``parse_state_value``;
- ``hello``: ``parse_hello``, (the token is verified), ``parse_inbox_cursor``.
Every frame that names a room has ``parse_room`` first (before membership).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wire.decode import opt_int, opt_versions, ref_of, req_str
from wire.errors import InvalidField, MissingField, UnsupportedVersion
from wire.frames import (
    COMMENT,
    CUSTOM_KIND_RE,
    GIFT,
    LIKE,
    PROTOCOL_VERSION,
    ROOM_RE,
    SECTION_RE,
    USER_RE,
)

# A client's id of its action: 1..64 of the characters of a user id (it is a
# key in the backend's ledger, and echoed to the whole room as ``client_id``).
ACTION_ID_RE = USER_RE


@dataclass(frozen=True, slots=True)
class Hello:
    token: Any
    ref: Any


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    known: dict[str, int]
    epoch: str | None
    ref: Any


@dataclass(frozen=True, slots=True)
class Leave:
    room: str
    ref: Any


@dataclass(frozen=True, slots=True)
class SendAction:
    room: str
    kind: str
    body: Any
    ref: Any
    # The client's own id of the action (``id``, optional): the idempotency
    # key of a kind the backend approves (docs/BACKEND.md), and how the
    # sender recognises its action in the fan-out (``client_id``).
    id: str | None = None


@dataclass(frozen=True, slots=True)
class WriteState:
    room: str
    section: str
    value: Any
    expected: int | None
    ref: Any


@dataclass(frozen=True, slots=True)
class Sync:
    room: str
    known: dict[str, int]
    epoch: str | None
    ref: Any


@dataclass(frozen=True, slots=True)
class SendPeer:
    to: str
    body: Any
    id: str
    ref: Any


@dataclass(frozen=True, slots=True)
class AckPeer:
    upto: int


@dataclass(frozen=True, slots=True)
class Ping:
    t: Any
    ref: Any


@dataclass(frozen=True, slots=True)
class Moderate:
    """A host's or moderator's ``moderate`` frame (docs/MODERATION.md):
    ``user`` for every op but ``retract``, which names the action ``id``;
    ``seconds`` (None: until lifted) for ``ban`` and ``mute``."""

    room: str
    op: str
    user: str | None
    id: str | None
    seconds: float | None
    reason: str
    ref: Any


# The ops of ``moderate``, and what each names.
MODERATE_USER_OPS = frozenset({"ban", "unban", "mute", "unmute", "kick"})
MODERATE_OPS = MODERATE_USER_OPS | {"retract"}
# A ban or mute lasts at most a year (absent: until lifted).
MAX_SANCTION_SECONDS = 366 * 86_400
MAX_REASON_CHARS = 200


def _required(frame: Mapping[str, Any], name: str) -> Any:
    """A field that must be present (any value the value rule passed)."""
    if name not in frame:
        raise MissingField(f"field {name!r} is required", ref=ref_of(frame), field=name)
    return frame[name]


# --- hello ------------------------------------------------------------------
def parse_hello(frame: Mapping[str, Any]) -> Hello:
    """``v`` (the protocol version, if given), then ``token`` present."""
    ref = ref_of(frame)
    version = frame.get("v", PROTOCOL_VERSION)
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise UnsupportedVersion(
            f"protocol version {version!r} is not supported; use {PROTOCOL_VERSION}",
            ref=ref, supported=[PROTOCOL_VERSION])
    return Hello(_required(frame, "token"), ref)


def parse_inbox_cursor(frame: Mapping[str, Any]) -> int | None:
    """A ``hello``'s ``inbox_cursor``, checked after its token."""
    return opt_int(frame, "inbox_cursor")


# --- frames without a room ----------------------------------------------------
def parse_ping(frame: Mapping[str, Any]) -> Ping:
    return Ping(frame.get("t"), ref_of(frame))


def parse_peer_ack(frame: Mapping[str, Any]) -> AckPeer:
    upto = opt_int(frame, "upto", minimum=1)
    if upto is None:
        raise MissingField("field 'upto' is required", ref=ref_of(frame), field="upto")
    return AckPeer(upto)


def parse_peer(frame: Mapping[str, Any]) -> SendPeer:
    """``to``, ``id``, ``body`` (the peer rate is the session's, after)."""
    to = req_str(frame, "to", pattern=USER_RE)
    msg_id = req_str(frame, "id")
    return SendPeer(to, _required(frame, "body"), msg_id, ref_of(frame))


# --- frames that name a room ------------------------------------------------
def parse_room(frame: Mapping[str, Any]) -> str:
    """The ``room`` of ``join``, ``leave``, ``sync``, ``action`` and ``state``."""
    return req_str(frame, "room", pattern=ROOM_RE)


def parse_known(frame: Mapping[str, Any]) -> dict[str, int]:
    """``known``: section -> version the client holds (empty if absent)."""
    return opt_versions(frame, "known")


def parse_epoch(frame: Mapping[str, Any]) -> str | None:
    """The store epoch the client's known versions come from, if it says."""
    epoch = frame.get("epoch")
    if epoch is None:
        return None
    if not isinstance(epoch, str) or len(epoch) > 64:
        raise InvalidField("field 'epoch' must be a string of at most 64 chars",
                           ref=ref_of(frame), field="epoch")
    return epoch


def parse_join(frame: Mapping[str, Any], room: str, known: dict[str, int]) -> Join:
    """The rest of a ``join`` (its ``epoch``), after the room limit."""
    return Join(room, known, parse_epoch(frame), ref_of(frame))


def parse_leave(frame: Mapping[str, Any], room: str) -> Leave:
    return Leave(room, ref_of(frame))


def parse_sync(frame: Mapping[str, Any], room: str) -> Sync:
    return Sync(room, parse_known(frame), parse_epoch(frame), ref_of(frame))


def action_body(kind: str, body: Any, ref: Any, max_comment_chars: int) -> Any:
    """The body to deliver for an action of ``kind``: a built-in kind's body
    checked and normalised, a custom kind's as is (which roles may send a
    kind is the session's check)."""
    if kind == COMMENT:
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip() or len(text) > max_comment_chars:
            raise InvalidField(
                f"a comment body is {{\"text\": string of 1..{max_comment_chars} chars}}",
                ref=ref, field="body")
        return {"text": text}
    if kind == GIFT:
        gift = body.get("gift") if isinstance(body, dict) else None
        count = body.get("count", 1) if isinstance(body, dict) else None
        if (not isinstance(gift, str) or not 0 < len(gift) <= 32
                or type(count) is not int or not 0 < count <= 9999):
            raise InvalidField("a gift body is {\"gift\": string, \"count\": 1..9999}",
                               ref=ref, field="body")
        return {"gift": gift, "count": count}
    if kind == LIKE:
        count = body.get("count", 1) if isinstance(body, dict) else (1 if body is None else None)
        if type(count) is not int or not 0 < count <= 100:
            raise InvalidField("a like body is {\"count\": 1..100} or absent",
                               ref=ref, field="body")
        return {"count": count}
    return body


def parse_action(frame: Mapping[str, Any], room: str, max_comment_chars: int) -> SendAction:
    """``kind``, then a built-in kind's ``body``, then the optional ``id``."""
    ref = ref_of(frame)
    kind = req_str(frame, "kind", max_len=32)
    if not CUSTOM_KIND_RE.match(kind):
        raise InvalidField("field 'kind' must match [a-z][a-z0-9_.-]{0,31}",
                           ref=ref, field="kind")
    body = action_body(kind, frame.get("body"), ref, max_comment_chars)
    client_id = None if frame.get("id") is None else req_str(frame, "id", pattern=ACTION_ID_RE)
    return SendAction(room, kind, body, ref, client_id)


def parse_sanction(body: Mapping[str, Any], ref: Any) -> tuple[float | None, str]:
    """``seconds`` (1..MAX_SANCTION_SECONDS, absent: until lifted) and
    ``reason`` (at most MAX_REASON_CHARS, absent: empty) of a ban or mute,
    from a ``moderate`` frame or an API body."""
    seconds = body.get("seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not 1 <= seconds <= MAX_SANCTION_SECONDS):
        raise InvalidField(f"field 'seconds' must be a number in 1..{MAX_SANCTION_SECONDS}",
                           ref=ref, field="seconds")
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise InvalidField(f"field 'reason' must be a string of at most {MAX_REASON_CHARS} "
                           "chars", ref=ref, field="reason")
    return (None if seconds is None else float(seconds)), reason


def parse_moderate(frame: Mapping[str, Any], room: str) -> Moderate:
    """``op``, then ``user`` (or ``id`` for ``retract``), ``seconds``, ``reason``."""
    ref = ref_of(frame)
    op = req_str(frame, "op", max_len=16)
    if op not in MODERATE_OPS:
        raise InvalidField(f"field 'op' must be one of {', '.join(sorted(MODERATE_OPS))}",
                           ref=ref, field="op")
    if op == "retract":
        return Moderate(room, op, None, req_str(frame, "id", max_len=64), None, "", ref)
    user = req_str(frame, "user", pattern=USER_RE)
    seconds, reason = parse_sanction(frame, ref)
    return Moderate(room, op, user, None, seconds, reason, ref)


def parse_state_target(frame: Mapping[str, Any]) -> str:
    """A ``state`` frame's ``section`` (checked before the role may write it)."""
    return req_str(frame, "section", pattern=SECTION_RE, max_len=97)


def parse_state_value(frame: Mapping[str, Any], room: str, section: str) -> WriteState:
    """The rest of a ``state`` frame: ``value`` present, then ``expect``."""
    value = _required(frame, "value")
    return WriteState(room, section, value, opt_int(frame, "expect"), ref_of(frame))
