"""Client frames, built for our own clients: one builder per frame a client
sends that they use (``edge/client.py``, the Python SDK in ``clients/python``,
the agents' in-process link and their edge client in ``llm_agents/``).

The server side of these frames (decoding them and checking their fields)
is ``wire.decode`` and ``edge/session.py``; ``wire.outgoing`` builds the
server's frames. Plain functions returning maps, as there; optional fields
are left out when absent, as the protocol allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wire.frames import (
    ACTION,
    HELLO,
    JOIN,
    LEAVE,
    MODERATE,
    PEER,
    PEER_ACK,
    PING,
    PROTOCOL_VERSION,
    STATE,
    SYNC,
)


def hello_request(token: str, inbox_cursor: int | None = None) -> dict[str, Any]:
    """The first frame: authenticate (``inbox_cursor``: the highest peer seq
    processed before, on a resume)."""
    frame: dict[str, Any] = {"type": HELLO, "token": token, "v": PROTOCOL_VERSION}
    if inbox_cursor is not None:
        frame["inbox_cursor"] = inbox_cursor
    return frame


def join_request(room: str, known: Mapping[str, int] | None = None,
                 epoch: str | None = None) -> dict[str, Any]:
    """Join ``room``; ``known`` and ``epoch`` resume from versions held."""
    frame: dict[str, Any] = {"type": JOIN, "room": room}
    if known:
        frame["known"] = known
    if epoch is not None:
        frame["epoch"] = epoch
    return frame


def action_request(room: str, kind: str, body: Any,
                   client_id: str | None = None) -> dict[str, Any]:
    """An action (``client_id``: the sender's own id of it, echoed to the
    room as ``client_id`` and the idempotency key of a proxied kind)."""
    frame: dict[str, Any] = {"type": ACTION, "room": room, "kind": kind, "body": body}
    if client_id is not None:
        frame["id"] = client_id
    return frame


def state_request(room: str, section: str, value: Any,
                  expect: int | None = None) -> dict[str, Any]:
    """Set a section (``expect``: only if its partial is still this)."""
    frame: dict[str, Any] = {"type": STATE, "room": room, "section": section, "value": value}
    if expect is not None:
        frame["expect"] = expect
    return frame


def sync_request(room: str, known: Mapping[str, int] | None = None,
                 epoch: str | None = None) -> dict[str, Any]:
    """Ask for the sections that moved since ``known`` (of ``epoch``)."""
    frame = join_request(room, known, epoch)
    frame["type"] = SYNC
    return frame


def leave_request(room: str) -> dict[str, Any]:
    return {"type": LEAVE, "room": room}


def peer_ack_request(upto: int) -> dict[str, Any]:
    """Every peer message up to seq ``upto`` is processed."""
    return {"type": PEER_ACK, "upto": upto}


def ping_request(t: Any = None) -> dict[str, Any]:
    return {"type": PING, "t": t}


def peer_request(to: str, body: Any, msg_id: str) -> dict[str, Any]:
    return {"type": PEER, "to": to, "body": body, "id": msg_id}


def moderate_request(room: str, op: str, user: str | None = None,
                     action_id: str | None = None, seconds: float | None = None,
                     reason: str | None = None) -> dict[str, Any]:
    """A host's or moderator's op on a user of the room, or ``retract`` of
    an action by its id (docs/MODERATION.md)."""
    frame: dict[str, Any] = {"type": MODERATE, "room": room, "op": op}
    for key, value in (("user", user), ("id", action_id), ("seconds", seconds),
                       ("reason", reason)):
        if value is not None:
            frame[key] = value
    return frame
