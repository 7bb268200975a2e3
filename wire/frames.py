"""Frames: what each one is called and the names and identifiers inside it.

Every frame is a map whose ``type`` field names it; the same maps go out as
msgpack or JSON (``wire.codecs``). Here are the frame type names and the
protocol version, the action kinds, the patterns of rooms, users, sections
and custom kinds, the roles, and the delivery priority an outgoing message
carries. The frames themselves are built in ``wire.outgoing`` (server ->
client).
"""

from __future__ import annotations

import enum
import re
from typing import Final

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
# Server -> client, added with polling: how a room's members take its state.
STATE_MODE: Final = "state_mode"
# Added with the rooms a platform can run (docs/MODERATION.md): client ->
# server ``moderate`` (a host or moderator of the room bans, mutes, kicks or
# retracts), answered by ``moderated``; server -> client ``presence`` (who
# joined and left, in rooms that keep presence) and ``retract`` (an action
# removed by id).
MODERATE: Final = "moderate"
MODERATED: Final = "moderated"
PRESENCE: Final = "presence"
RETRACT: Final = "retract"
# Why a member left a room without asking (``left``'s ``reason``).
LEFT_KICKED: Final = "kicked"
LEFT_BANNED: Final = "banned"
LEFT_CLOSED: Final = "closed"
# Why a redirect was sent: the join reached an edge of another group, or the
# room moved to another group while the client was in it (groups joined or left).
REDIRECT_NOT_OWNER: Final = "not_owner"
REDIRECT_MOVED: Final = "moved"

CLIENT_FRAME_TYPES: Final = frozenset(
    {HELLO, JOIN, LEAVE, ACTION, STATE, SYNC, PEER, PEER_ACK, PING, MODERATE}
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

# A room pattern (the token's ``rooms`` claim, the rooms config): a room id
# in which ``*`` stands for any run of room id characters (``quiz-*``; ``*``
# alone is every room).
ROOM_PATTERN_RE: Final = re.compile(r"^[A-Za-z0-9_.:*-]{1,64}$")

# Roles. ``viewer``, ``agent`` and ``system`` (the backend) are a user's
# everywhere (the token's ``role`` claim); ``host`` and ``moderator`` are
# granted per room (the token's ``rooms`` claim), never globally.
ROLES: Final = ("viewer", "host", "moderator", "agent")
GLOBAL_ROLES: Final = ("viewer", "agent")
ROOM_ROLES: Final = ("viewer", "moderator", "host")
ELEVATED_ROLES: Final = frozenset({"host", "moderator"})


def room_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression of a room pattern (``ROOM_PATTERN_RE``)."""
    return re.compile("^" + re.escape(pattern).replace(r"\*", "[A-Za-z0-9_.:-]*") + "$")


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

