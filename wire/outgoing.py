"""Outgoing frames: one builder per frame type the server sends.

Every server -> client frame is built here and nowhere else, so that
``docs/PROTOCOL.md``'s frame list maps one to one onto this module (its
"Frames" table names the builder of each frame). A builder is a plain
function of plain values returning the frame's map: no object per message,
since ``action`` and ``state`` frames are built on the fan-out path, once per
message (``wire.encoded.Encoded`` then encodes that map once per variant).
The wire stands on no other floor, so builders take fields, not the model
objects of ``state_versions`` or ``room_router``.

Key order is part of the bytes: msgpack and JSON write a map's keys in
insertion order, so each builder inserts them in the order the protocol has
always written them (``tests/unit/test_outgoing.py`` pins it). ``ref``: a
reply to a frame that carried no ``ref`` carries none either; a builder that
echoes one leaves the key out when it is None (removing a key from a map
keeps the order of the others, so the bytes are those of the old
build-then-delete).

``batch`` is not here: its frame is assembled from already-encoded payloads
(``wire.encoded.batch_frame``), never built as a map.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from wire.frames import (
    ACTION,
    ERROR,
    INBOX,
    JOINED,
    LEFT,
    MODERATED,
    ONLINE,
    PEER,
    PEER_ACK,
    PONG,
    PRESENCE,
    PROTOCOL_VERSION,
    REDIRECT,
    RETRACT,
    STATE,
    STATE_MODE,
    SYNC,
    WELCOME,
)

# How a room's members take its state (``state_mode`` frames and ``joined``).
PUSH = "push"
POLL = "poll"


def welcome_frame(ref: Any, user: Mapping[str, Any], node: str, session: int, ts: float,
                  codec: str, limits: Mapping[str, Any]) -> dict[str, Any]:
    """The answer to a good ``hello`` (``user``: the identity's public
    fields; ``codec``: the hello's encoding; ``limits``: ``welcome_limits``)."""
    frame: dict[str, Any] = {"type": WELCOME, "v": PROTOCOL_VERSION}
    if ref is not None:
        frame["ref"] = ref
    frame["user"] = user
    frame["node"] = node
    frame["session"] = session
    frame["ts"] = ts
    frame["codec"] = codec
    frame["limits"] = limits
    return frame


def welcome_limits(*, max_frame_bytes: int, max_value_bytes: int, max_value_depth: int,
                   max_rooms: int, actions_per_second: float, actions_burst: float,
                   frames_per_second: float, frames_burst: float,
                   max_sections: int) -> dict[str, Any]:
    """The ``limits`` map of ``welcome``: the bounds this connection runs under."""
    return {"max_frame_bytes": max_frame_bytes, "max_value_bytes": max_value_bytes,
            "max_value_depth": max_value_depth, "max_rooms": max_rooms,
            "actions_per_second": actions_per_second, "actions_burst": actions_burst,
            "frames_per_second": frames_per_second, "frames_burst": frames_burst,
            "max_sections": max_sections}


class RoomVersions(NamedTuple):
    """The body ``joined`` and ``sync`` share: the room's versions and the
    sections the client is missing, as ``(section, partial, value)``;
    ``recovered`` is None unless the client resumed (sent versions or an
    epoch), ``reason`` None unless ``recovered`` is False. One per reply,
    never on the fan-out path."""

    room: str
    epoch: str
    total: int
    versions: Mapping[str, int]
    sections: Sequence[tuple[str, int, Any]]
    recovered: bool | None = None
    reason: str | None = None


def _room_versions(body: RoomVersions) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "room": body.room, "epoch": body.epoch, "total": body.total, "versions": body.versions,
        "sections": [{"section": name, "partial": partial, "value": value}
                     for name, partial, value in body.sections],
    }
    if body.recovered is not None:
        frame["recovered"] = body.recovered
        if body.reason is not None:
            frame["reason"] = body.reason
    return frame


# ``joined_frame``'s ``presence`` for a room whose list is over its cap.
PRESENCE_CAPPED = "capped"


def joined_frame(body: RoomVersions, ref: Any, members: int,
                 poll: tuple[str, float] | None, *,
                 history: Sequence[Mapping[str, Any]] | None = None,
                 presence: Sequence[Mapping[str, Any]] | str | None = None
                 ) -> dict[str, Any]:
    """The answer to ``join`` (``members``: on this edge, the new one
    included; ``poll``: ``(head url, interval)`` when the room's members poll
    its state, None when it is pushed; ``history``: the room's kept
    ``action`` frames, oldest first, only for a room that keeps history;
    ``presence``: in a room that keeps presence, its member list, or
    ``PRESENCE_CAPPED`` above the cap). ``type`` comes after the body: the
    order the protocol has always written; ``history`` and ``presence`` are
    last and only in rooms that keep them, so other rooms have the old bytes."""
    frame = _room_versions(body)
    frame["type"] = JOINED
    if ref is not None:
        frame["ref"] = ref
    frame["members"] = members
    _add_state_mode(frame, poll)
    if history is not None:
        frame["history"] = history
    if presence == PRESENCE_CAPPED:
        frame["presence_capped"] = True
    elif presence is not None:
        frame["presence"] = list(presence)
    return frame


def sync_frame(body: RoomVersions, ref: Any) -> dict[str, Any]:
    """The answer to ``sync``."""
    frame = _room_versions(body)
    frame["type"] = SYNC
    if ref is not None:
        frame["ref"] = ref
    return frame


def state_mode_frame(room: str, poll: tuple[str, float] | None) -> dict[str, Any]:
    """The room's members now take its state by polling ``poll`` =
    ``(head url, interval)``, or by push (None)."""
    frame: dict[str, Any] = {"type": STATE_MODE, "room": room}
    _add_state_mode(frame, poll)
    return frame


def _add_state_mode(frame: dict[str, Any], poll: tuple[str, float] | None) -> None:
    if poll is None:
        frame["state_mode"] = PUSH
    else:
        frame["state_mode"] = POLL
        frame["poll"] = {"head": poll[0], "interval": poll[1]}


def left_frame(room: str, ref: Any, reason: str | None = None,
               **extra: Any) -> dict[str, Any]:
    """The answer to ``leave``; or, with ``reason`` (``kicked``, ``banned``,
    ``closed``: docs/MODERATION.md), the server took the connection out of
    the room, with ``extra`` fields (``until``, ``message``) after it. A
    plain leave's keys are as they always were."""
    frame: dict[str, Any] = {"type": LEFT, "room": room}
    if ref is not None:
        frame["ref"] = ref
    if reason is not None:
        frame["reason"] = reason
        frame.update(extra)
    return frame


class ActionIds:
    """Action ids: unique across processes (a random 48-bit prefix per
    stamping process) and increasing within one (a counter): no two edges,
    nor an agents process, ever hand out the same id."""

    __slots__ = ("_next", "_prefix")

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(6) + "-"
        self._next = 0

    def next(self) -> str:
        self._next += 1
        return f"{self._prefix}{self._next:x}"


def action_frame(room: str, kind: str, body: Any, sender: Mapping[str, Any], seq: int,
                 ts: float, action_id: str, client_id: str | None = None) -> dict[str, Any]:
    """A stamped ``action`` as it goes on the bus and to the room's members
    (``seq``: the stamping node's counter for the room; ``action_id``:
    unique across the cluster, what ``retract`` names; ``client_id``: the
    sender's own id of it, when it gave one; see PROTOCOL.md)."""
    frame = {"type": ACTION, "room": room, "kind": kind, "body": body, "from": sender,
             "seq": seq, "ts": ts, "id": action_id}
    if client_id is not None:
        frame["client_id"] = client_id
    return frame


def retract_frame(room: str, action_id: str) -> dict[str, Any]:
    """The action ``action_id`` of ``room`` was retracted: clients remove it
    (it goes on the room's bus subject like an action, never shed)."""
    return {"type": RETRACT, "room": room, "id": action_id}


def moderated_frame(room: str, op: str, ref: Any, *, user: str | None = None,
                    action_id: str | None = None, until: float | None = None) -> dict[str, Any]:
    """The answer to ``moderate``: ``op`` was carried out on ``user`` (or on
    the action ``action_id`` for ``retract``), lasting ``until`` (epoch
    seconds) when it ends."""
    frame: dict[str, Any] = {"type": MODERATED, "room": room, "op": op}
    if user is not None:
        frame["user"] = user
    if action_id is not None:
        frame["id"] = action_id
    if until is not None:
        frame["until"] = until
    if ref is not None:
        frame["ref"] = ref
    return frame


def state_frame(room: str, section: str, partial: int, total: int,
                value: Any) -> dict[str, Any]:
    """One applied change of a section, as it goes on the bus and to the
    room's members: the section's new ``partial``, the room's new ``total``."""
    return {"type": STATE, "room": room, "section": section, "partial": partial,
            "total": total, "value": value}


def peer_frame(seq: int, prev: int, to: str, sender: str, sender_name: str, msg_id: str,
               body: Any, ts: float) -> dict[str, Any]:
    """A stored peer message for ``to`` (``prev``: the addressee's previous
    seq when it was stored; ``msg_id``: the sender's id of the message)."""
    return {"type": PEER, "seq": seq, "prev": prev, "to": to,
            "from": {"id": sender, "name": sender_name},
            "id": msg_id, "body": body, "ts": ts}


def peer_ack_frame(msg_id: str, seq: int, ref: Any, duplicate: bool) -> dict[str, Any]:
    """The answer to ``peer``: stored as ``seq`` (``duplicate``: a retry of
    a message stored before)."""
    frame: dict[str, Any] = {"type": PEER_ACK, "id": msg_id, "seq": seq}
    if ref is not None:
        frame["ref"] = ref
    frame["duplicate"] = duplicate
    return frame


def pong_frame(t: Any, ts: float, ref: Any) -> dict[str, Any]:
    """The answer to ``ping`` (``t``: the ping's, echoed)."""
    frame: dict[str, Any] = {"type": PONG, "t": t, "ts": ts}
    if ref is not None:
        frame["ref"] = ref
    return frame


def online_frame(room: str, count: int) -> dict[str, Any]:
    """The room's member count, sent when it changed."""
    return {"type": ONLINE, "room": room, "count": count}


def presence_frame(room: str, joins: Sequence[Mapping[str, Any]], leaves: Sequence[str],
                   capped: bool, count: int) -> dict[str, Any]:
    """One tick's changes of a room's member list (``joins``: members,
    ``leaves``: user ids), or, when ``capped``, that the list went over the
    room's cap (``count`` members): counts only from then on."""
    if capped:
        return {"type": PRESENCE, "room": room, "capped": True, "count": count}
    return {"type": PRESENCE, "room": room, "joins": list(joins), "leaves": list(leaves),
            "count": count}


def inbox_frame(recovered: bool, reason: str | None, upto: int,
                cursor: int) -> dict[str, Any]:
    """After the replay of a hello's ``inbox_cursor``: whether the inbox was
    read to the end (``reason`` only when not)."""
    frame: dict[str, Any] = {"type": INBOX, "recovered": recovered}
    if reason is not None:
        frame["reason"] = reason
    frame["upto"] = upto
    frame["cursor"] = cursor
    return frame


def error_frame(code: str, message: str, advice: str, ref: Any,
                extra: Mapping[str, Any]) -> dict[str, Any]:
    """A refusal or failure (``extra``: the error's structured fields,
    ``retry_after``, ``current``...); ``wire.errors.LiveroomError.to_frame``
    fills it in."""
    frame: dict[str, Any] = {"type": ERROR, "code": code, "message": message, "advice": advice}
    if ref is not None:
        frame["ref"] = ref
    frame.update(extra)
    return frame


def redirect_frame(room: str, urls: Sequence[str], reason: str,
                   ref: Any = None) -> dict[str, Any]:
    """Join ``room`` at ``url`` instead (``urls``: fallbacks in order)."""
    frame: dict[str, Any] = {"type": REDIRECT, "room": room, "url": urls[0],
                             "urls": list(urls), "reason": reason}
    if ref is not None:
        frame["ref"] = ref
    return frame

