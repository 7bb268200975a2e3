"""The session state machine: one client connection's frames in, commands out.

Theory of operation
-------------------
A session starts in AWAITING_HELLO. The only frame accepted there is
``hello``; it carries a token, and a valid one moves the session to READY
with the identity it names. Any other frame before that gets
``hello_required``; a bad token gets ``unauthorized`` and the adapter closes
the connection with AUTH_FAILED (4001), or TOKEN_EXPIRED (4200) when the token
has only expired. In READY every client frame type is
accepted, validated and authorised here, and turned into one small command
(a frozen dataclass) that the edge node carries out. CLOSED accepts nothing.

Everything that can be decided without I/O is decided here: field types and
sizes, the room limit per connection, membership of the room a frame names,
role permissions and the rate limits. Errors are raised as
``LiveroomError`` subclasses carrying the offending frame's ``ref``.

Every frame, of every kind and in every phase, first takes one token from
the connection's frame budget (``EdgeConfig.frame_rate``); a ``join`` or
``sync`` also pays for the reply it made, by size (``charge_reply``, which
the node calls once it has built the reply; the budget may go into debt).
So no frame kind can be sent faster than the budget refills, and no client
can make the server re-encode a big room faster than ``frame_cost_bytes``
times the rate. The per-user action and peer limits apply on top.

Pure: no I/O, no event loop; time comes in as ``now`` (wall clock seconds).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edge.auth import Identity
from edge.config import EdgeConfig
from room_router.ratelimit import RateLimiter, TokenBucket
from wire.decode import opt_int, opt_versions, ref_of, req_str
from wire.errors import (
    AlreadyAuthenticated,
    Forbidden,
    HelloRequired,
    InvalidField,
    LiveroomError,
    MissingField,
    NotJoined,
    RateLimited,
    TooManyRooms,
    UnsupportedVersion,
)
from wire.frames import (
    ACTION,
    COMMENT,
    CUSTOM_KIND_RE,
    GIFT,
    HELLO,
    JOIN,
    LEAVE,
    LIKE,
    PEER,
    PEER_ACK,
    PING,
    PROTOCOL_VERSION,
    ROOM_RE,
    SECTION_RE,
    STATE,
    SYNC,
    USER_RE,
)


@dataclass(frozen=True, slots=True)
class Authenticate:
    identity: Identity
    ref: Any
    # The highest peer ``seq`` the client processed on an earlier connection
    # (None: it did not say; then no ``inbox`` frame follows the replay).
    inbox_cursor: int | None = None


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


Command = Authenticate | Join | Leave | SendAction | WriteState | Sync | SendPeer | AckPeer | Ping


def opt_epoch(frame: Mapping[str, Any]) -> str | None:
    """The store epoch the client's known versions come from, if it says."""
    epoch = frame.get("epoch")
    if epoch is None:
        return None
    if not isinstance(epoch, str) or len(epoch) > 64:
        raise InvalidField("field 'epoch' must be a string of at most 64 chars",
                           ref=ref_of(frame), field="epoch")
    return epoch


class Phase(enum.Enum):
    AWAITING_HELLO = "awaiting_hello"
    READY = "ready"
    CLOSED = "closed"


def may_write_section(identity: Identity, section: str) -> bool:
    """Hosts and moderators write any section; an agent writes only the
    sections it owns: ``stage.<its user id>``."""
    if identity.role in ("host", "moderator"):
        return True
    return identity.role == "agent" and section == f"stage.{identity.user}"


def validate_action(kind: str, body: Any, role: str, ref: Any, max_comment_chars: int) -> Any:
    """The body to deliver for an action of ``kind`` sent by ``role``, or the
    documented error. Role ``system`` is the backend publish API."""
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
    if kind.startswith("system.") and role != "system":
        raise Forbidden("system.* actions come only through the backend API", ref=ref)
    if kind.startswith("agent.") and role not in ("agent", "system"):
        raise Forbidden("agent.* actions are for agents only", ref=ref)
    return body


class Session:
    __slots__ = (
        "_action_limiter",
        "_frames",
        "_peer_limiter",
        "_verify",
        "config",
        "identity",
        "phase",
        "rooms",
    )

    def __init__(self, config: EdgeConfig, verify: Callable[[object, float], Identity],
                 action_limiter: RateLimiter, peer_limiter: RateLimiter,
                 rooms: set[str]) -> None:
        self.config = config
        self.phase = Phase.AWAITING_HELLO
        self.identity: Identity | None = None
        # The rooms this connection is a member of. The set belongs to the
        # connection (the hub adds and removes); the session only reads it.
        self.rooms = rooms
        self._verify = verify
        self._action_limiter = action_limiter
        self._peer_limiter = peer_limiter
        # The connection's frame budget, from its first frame on.
        self._frames: TokenBucket | None = None

    def take_frame(self, ref: Any, now: float) -> None:
        """One token of the connection's frame budget, or ``rate_limited``.
        ``receive`` takes it for every frame it is given; the node takes it
        for a frame that never reached ``receive`` (it could not be decoded),
        so that malformed frames count against the same rate."""
        bucket = self._frames
        if bucket is None:
            bucket = self._frames = TokenBucket(self.config.frame_rate.burst, now)
        wait = bucket.take(self.config.frame_rate, now)
        if wait:
            raise RateLimited(ref=ref, retry_after=round(wait, 3))

    def charge_reply(self, nbytes: int, now: float) -> None:
        """A ``join`` or ``sync`` reply of ``nbytes`` was built: one more
        token per ``frame_cost_bytes`` of it, into debt if need be."""
        extra = nbytes // self.config.frame_cost_bytes
        if extra and self._frames is not None:
            self._frames.charge(self.config.frame_rate, now, extra)

    def receive(self, frame: Mapping[str, Any], now: float) -> Command:
        ftype = frame["type"]
        ref = ref_of(frame)
        self.take_frame(ref, now)
        if self.phase is Phase.AWAITING_HELLO:
            if ftype != HELLO:
                raise HelloRequired(ref=ref)
            version = frame.get("v", PROTOCOL_VERSION)
            if type(version) is not int or version != PROTOCOL_VERSION:
                raise UnsupportedVersion(
                    f"protocol version {version!r} is not supported; use {PROTOCOL_VERSION}",
                    ref=ref, supported=[PROTOCOL_VERSION])
            if "token" not in frame:
                raise MissingField("field 'token' is required", ref=ref, field="token")
            try:
                verified = self._verify(frame["token"], now)
            except LiveroomError as err:
                err.ref = ref
                raise
            cursor = opt_int(frame, "inbox_cursor")
            self.identity = verified
            self.phase = Phase.READY
            return Authenticate(verified, ref, cursor)
        identity = self.identity
        assert identity is not None and self.phase is Phase.READY
        if ftype == HELLO:
            raise AlreadyAuthenticated(ref=ref)
        if ftype == PING:
            return Ping(frame.get("t"), ref)
        if ftype == PEER_ACK:
            upto = opt_int(frame, "upto", minimum=1)
            if upto is None:
                raise MissingField("field 'upto' is required", ref=ref, field="upto")
            return AckPeer(upto)
        if ftype == PEER:
            to = req_str(frame, "to", pattern=USER_RE)
            msg_id = req_str(frame, "id")
            if "body" not in frame:
                raise MissingField("field 'body' is required", ref=ref, field="body")
            wait = self._peer_limiter.check(identity.user, "", now)
            if wait:
                raise RateLimited(ref=ref, retry_after=round(wait, 3))
            return SendPeer(to, frame["body"], msg_id, ref)
        room = req_str(frame, "room", pattern=ROOM_RE)
        if ftype == JOIN:
            known = opt_versions(frame, "known")
            if room not in self.rooms and len(self.rooms) >= self.config.max_rooms_per_conn:
                raise TooManyRooms(
                    f"at most {self.config.max_rooms_per_conn} rooms per connection",
                    ref=ref, limit=self.config.max_rooms_per_conn)
            return Join(room, known, opt_epoch(frame), ref)
        if room not in self.rooms:
            raise NotJoined(f"not a member of room {room!r}", ref=ref, room=room)
        if ftype == LEAVE:
            return Leave(room, ref)
        if ftype == SYNC:
            return Sync(room, opt_versions(frame, "known"), opt_epoch(frame), ref)
        if ftype == ACTION:
            kind = req_str(frame, "kind", max_len=32)
            if not CUSTOM_KIND_RE.match(kind):
                raise InvalidField("field 'kind' must match [a-z][a-z0-9_.-]{0,31}",
                                   ref=ref, field="kind")
            body = validate_action(kind, frame.get("body"), identity.role, ref,
                                   self.config.max_comment_chars)
            wait = self._action_limiter.check(identity.user, room, now)
            if wait:
                raise RateLimited(ref=ref, retry_after=round(wait, 3))
            return SendAction(room, kind, body, ref)
        if ftype == STATE:
            section = req_str(frame, "section", pattern=SECTION_RE, max_len=97)
            if not may_write_section(identity, section):
                raise Forbidden(f"role {identity.role!r} may not write section {section!r}",
                                ref=ref, section=section)
            if "value" not in frame:
                raise MissingField("field 'value' is required", ref=ref, field="value")
            expected = opt_int(frame, "expect")
            return WriteState(room, section, frame["value"], expected, ref)
        raise AssertionError(f"unhandled frame type {ftype}")  # decode_frame filters

    def close(self) -> None:
        self.phase = Phase.CLOSED
