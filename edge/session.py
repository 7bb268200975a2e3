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

Everything that can be decided without I/O is decided here: the room limit
per connection, membership of the room a frame names, role permissions and
the rate limits; a frame's fields (types, sizes, patterns, action bodies)
are parsed into its typed frame by ``wire.incoming``, called at the points
PROTOCOL.md's order of checks puts them. Errors are raised as
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
from room_router.ratelimit import Rate, RateLimiter, TokenBucket
from room_router.roomconfig import RoomPolicies
from wire import incoming
from wire.decode import ref_of
from wire.errors import (
    AlreadyAuthenticated,
    Forbidden,
    HelloRequired,
    LiveroomError,
    NotJoined,
    RateLimited,
    TooManyRooms,
)
from wire.frames import (
    ACTION,
    ELEVATED_ROLES,
    HELLO,
    JOIN,
    LEAVE,
    MODERATE,
    PEER,
    PEER_ACK,
    PING,
    STATE,
    SYNC,
)
from wire.incoming import (
    AckPeer,
    Join,
    Leave,
    Moderate,
    Ping,
    SendAction,
    SendPeer,
    Sync,
    WriteState,
)


@dataclass(frozen=True, slots=True)
class Authenticate:
    identity: Identity
    ref: Any
    # The highest peer ``seq`` the client processed on an earlier connection
    # (None: it did not say; then no ``inbox`` frame follows the replay).
    inbox_cursor: int | None = None


# The other commands are the client's typed frames (wire/incoming.py).
Command = (Authenticate | Join | Leave | SendAction | WriteState | Sync | SendPeer | AckPeer
           | Ping | Moderate)


class Phase(enum.Enum):
    AWAITING_HELLO = "awaiting_hello"
    READY = "ready"
    CLOSED = "closed"


def may_write_section(identity: Identity, room: str, section: str) -> bool:
    """Hosts and moderators of the room write any of its sections; an agent
    writes only the sections it owns: ``stage.<its user id>`` and its place
    on the stage, ``positions.<its user id>`` (lossy, ``llm_agents.world``)."""
    if identity.role_in(room) in ELEVATED_ROLES:
        return True
    return identity.role == "agent" and section in (f"stage.{identity.user}",
                                                    f"positions.{identity.user}")


def check_action_role(kind: str, role: str, ref: Any) -> None:
    """``forbidden`` for a ``system.*`` action not sent by the backend (role
    ``system``) and an ``agent.*`` one not sent by an agent or the backend."""
    if kind.startswith("system.") and role != "system":
        raise Forbidden("system.* actions come only through the backend API", ref=ref)
    if kind.startswith("agent.") and role not in ("agent", "system"):
        raise Forbidden("agent.* actions are for agents only", ref=ref)


class Session:
    __slots__ = (
        "_action_limiter",
        "_frames",
        "_peer_limiter",
        "_policies",
        "_slow_limiter",
        "_verify",
        "config",
        "identity",
        "phase",
        "rooms",
    )

    def __init__(self, config: EdgeConfig, verify: Callable[[object, float], Identity],
                 action_limiter: RateLimiter, peer_limiter: RateLimiter,
                 rooms: set[str], policies: RoomPolicies | None = None,
                 slow_limiter: RateLimiter | None = None) -> None:
        self.config = config
        self.phase = Phase.AWAITING_HELLO
        self.identity: Identity | None = None
        # The rooms this connection is a member of. The set belongs to the
        # connection (the hub adds and removes); the session only reads it.
        self.rooms = rooms
        self._verify = verify
        self._action_limiter = action_limiter
        self._peer_limiter = peer_limiter
        # The rooms config in force (room_router/roomconfig.py) and the
        # slow-mode buckets (per user and room, shared by the node's sessions).
        # (``is None``, not ``or``: an empty RateLimiter is falsy, and one
        # made per session would cost every connection ~200 bytes.)
        self._policies = policies if policies is not None else RoomPolicies()
        self._slow_limiter = slow_limiter if slow_limiter is not None else \
            RateLimiter(Rate(1.0, 1))
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
        """The command for one decoded client frame, or the first documented
        error by PROTOCOL.md's order of checks: the frame budget, the phase,
        then the frame's own checks, its fields parsed by ``wire.incoming``
        between the membership, role, limit and rate checks made here."""
        ftype = frame["type"]
        ref = ref_of(frame)
        self.take_frame(ref, now)
        if self.phase is Phase.AWAITING_HELLO:
            if ftype != HELLO:
                raise HelloRequired(ref=ref)
            hello = incoming.parse_hello(frame)
            try:
                verified = self._verify(hello.token, now)
            except LiveroomError as err:
                err.ref = ref
                raise
            cursor = incoming.parse_inbox_cursor(frame)
            self.identity = verified
            self.phase = Phase.READY
            return Authenticate(verified, ref, cursor)
        identity = self.identity
        assert identity is not None and self.phase is Phase.READY
        if ftype == HELLO:
            raise AlreadyAuthenticated(ref=ref)
        if ftype == PING:
            return incoming.parse_ping(frame)
        if ftype == PEER_ACK:
            return incoming.parse_peer_ack(frame)
        if ftype == PEER:
            peer = incoming.parse_peer(frame)
            wait = self._peer_limiter.check(identity.user, "", now)
            if wait:
                raise RateLimited(ref=ref, retry_after=round(wait, 3))
            return peer
        room = incoming.parse_room(frame)
        if ftype == JOIN:
            known = incoming.parse_known(frame)
            if room not in self.rooms and len(self.rooms) >= self.config.max_rooms_per_conn:
                raise TooManyRooms(
                    f"at most {self.config.max_rooms_per_conn} rooms per connection",
                    ref=ref, limit=self.config.max_rooms_per_conn)
            join = incoming.parse_join(frame, room, known)
            policy = self._policies.policy(room)
            # A room with a join proxy leaves admission to the backend
            # (the node asks it, then ``admit``): no grant needed in the token.
            if policy.private and not policy.join_proxy and identity.grant_for(room) is None:
                raise Forbidden(f"room {room!r} is private: the token's rooms claim must "
                                "grant it", ref=ref, room=room, reason="private")
            return join
        if room not in self.rooms:
            raise NotJoined(f"not a member of room {room!r}", ref=ref, room=room)
        if ftype == LEAVE:
            return incoming.parse_leave(frame, room)
        if ftype == SYNC:
            return incoming.parse_sync(frame, room)
        if ftype == ACTION:
            action = incoming.parse_action(frame, room, self.config.max_comment_chars)
            self._check_action(identity, action, now)
            return action
        if ftype == STATE:
            section = incoming.parse_state_target(frame)
            if not may_write_section(identity, room, section):
                raise Forbidden(f"role {identity.role_in(room)!r} may not write section "
                                f"{section!r}", ref=ref, section=section)
            return incoming.parse_state_value(frame, room, section)
        if ftype == MODERATE:
            role = identity.role_in(room)
            if role not in ELEVATED_ROLES:
                raise Forbidden(f"only a host or moderator of room {room!r} moderates it",
                                ref=ref, room=room)
            return incoming.parse_moderate(frame, room)
        raise AssertionError(f"unhandled frame type {ftype}")  # decode_frame filters

    def _check_action(self, identity: Identity, action: SendAction, now: float) -> None:
        """The role may send the kind, the room allows it, the room's action
        rate, then its slow mode (viewers only)."""
        ref, room, kind = action.ref, action.room, action.kind
        check_action_role(kind, identity.role, ref)
        policy = self._policies.policy(room)
        if identity.role != "agent" and not policy.allows_kind(kind):
            raise Forbidden(f"room {room!r} does not take actions of kind {kind!r}",
                            ref=ref, room=room, kind=kind)
        rate = None if policy.action_rate is None or policy.action_burst is None else \
            Rate(policy.action_rate, policy.action_burst)
        wait = self._action_limiter.check(identity.user, room, now, rate)
        if wait:
            raise RateLimited(ref=ref, retry_after=round(wait, 3))
        if policy.slow_mode > 0 and identity.role_in(room) == "viewer":
            wait = self._slow_limiter.check(identity.user, room, now,
                                            Rate(1.0 / policy.slow_mode, 1))
            if wait:
                raise RateLimited(f"room {room!r} is in slow mode: one action per "
                                  f"{policy.slow_mode:g} s", ref=ref,
                                  retry_after=round(wait, 3), reason="slow_mode")

    def admit(self, room: str, role: str | None, rooms: set[str]) -> None:
        """The join proxy allowed a join of ``room`` (``role``: what it
        granted there, None: as the token says): from now on the identity
        holds ``role`` in the room, and a grant of it, which admits to a
        private room (a viewer grant when the token has none). ``rooms``:
        the connection's rooms, the only ones earlier proxy grants keep."""
        identity = self.identity
        assert identity is not None
        if role is None:
            if identity.grant_for(room) is not None:
                return
            role = "viewer"
        self.identity = identity.with_room_role(room, role, rooms)

    def close(self) -> None:
        self.phase = Phase.CLOSED
