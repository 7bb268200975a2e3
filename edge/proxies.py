"""The edge's side of the backend hooks (docs/BACKEND.md): what it asks the
platform's backend before an action, a connection or a join, and what it
does with the answer. The calls themselves, with their timeout, cap and
breaker, are ``room_router.hooks.HookClient``'s.

- publish: an action whose kind the room's config lists in
  ``publish_proxy``; the backend's body (priced, verified) is what fans out.
  Only such kinds pay for it: the node asks ``policy.proxies(kind)`` (a
  cached lookup) and awaits nothing else for the others.
- connect (``--connect-proxy``): every ``hello``; the backend may refuse the
  user or attach ``info``, shown with the user in the rooms.
- join: a join of a room whose config sets ``join_proxy``; the backend may
  refuse it, admit the user to a private room, or grant a role in it.

Without ``--backend-url`` a room configured for a hook fails closed: its
proxied actions and joins get ``unavailable`` (nothing is let through
unchecked because a flag was forgotten).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from edge.auth import Identity
from room_router.events import NO_EVENTS, EventSink, action_settled
from room_router.hooks import (
    CONNECT,
    JOIN,
    PUBLISH,
    HookClient,
    connect_answer,
    join_answer,
    publish_answer,
)
from wire.errors import LiveroomError, Unavailable
from wire.incoming import SendAction


class Proxies:
    __slots__ = ("_events", "_hooks", "_max_comment_chars", "_max_value_bytes", "connects")

    def __init__(self, hooks: HookClient | None, *, max_comment_chars: int,
                 max_value_bytes: int, events: EventSink = NO_EVENTS) -> None:
        self._hooks = hooks
        # Every proxied action's end is an ``action.settled`` event.
        self._events = events
        self._max_comment_chars = max_comment_chars
        self._max_value_bytes = max_value_bytes
        # Whether every hello goes to the backend (--connect-proxy).
        self.connects = hooks is not None and hooks.config.connect

    @property
    def hooks(self) -> HookClient | None:
        return self._hooks

    async def close(self) -> None:
        if self._hooks is not None:
            await self._hooks.close()

    def _client(self, what: str, ref: Any) -> HookClient:
        if self._hooks is None:
            raise Unavailable(f"{what} needs the platform's backend, and this edge has no "
                              "--backend-url", ref=ref, reason="backend_none")
        return self._hooks

    async def publish(self, ident: Identity, role: str, cmd: SendAction,
                      action_id: str) -> Any:
        """The body the backend approved for ``cmd`` (``action_id``: the
        server's id of the action, the idempotency key when the client gave
        none); ``rejected`` or ``unavailable`` with the frame's ref."""
        hooks = self._client(f"actions of kind {cmd.kind!r} in this room", cmd.ref)
        payload = {"room": cmd.room, "user": ident.public_in(role), "kind": cmd.kind,
                   "body": cmd.body, "id": cmd.id or action_id}

        def parse(answer: Any) -> Any:
            return publish_answer(answer, cmd.kind, cmd.body, self._max_comment_chars,
                                  self._max_value_bytes)

        try:
            body = await hooks.ask(PUBLISH, payload, parse)
        except LiveroomError as err:
            err.ref = cmd.ref
            outcome = "refused" if err.code == "rejected" else "failed"
            self._settled(cmd, action_id, ident, outcome,
                          {"code": err.code, **({"reason": err.extra["reason"]}
                                                if "reason" in err.extra else {})})
            raise
        self._settled(cmd, action_id, ident, "published", {})
        return body

    def _settled(self, cmd: SendAction, action_id: str, ident: Identity, outcome: str,
                 detail: dict[str, Any]) -> None:
        if cmd.id is not None:
            detail["client_id"] = cmd.id
        self._events.emit(cmd.room, "action.settled",
                          action_settled(action_id, cmd.kind, ident.user, outcome, detail))

    async def connect(self, ident: Identity) -> Identity:
        """``ident`` with the ``info`` the backend attached (the caller sets
        the ``ref``); ``rejected`` or ``unavailable``."""
        assert self._hooks is not None
        payload = {"user": ident.user, "name": ident.name, "role": ident.role,
                   "rooms": {g.pattern: g.role for g in ident.grants}}
        info = await self._hooks.ask(CONNECT, payload, connect_answer)
        return ident if info is None else replace(ident, info=info)

    async def join(self, ident: Identity, room: str, ref: Any) -> str | None:
        """The role the backend grants in ``room`` (None: as the token says);
        ``rejected`` or ``unavailable`` with the frame's ref."""
        hooks = self._client(f"joining room {room!r}", ref)
        payload = {"room": room, "user": ident.public_in(ident.role_in(room)),
                   "granted": ident.grant_for(room) is not None}
        try:
            return await hooks.ask(JOIN, payload, join_answer)
        except LiveroomError as err:
            err.ref = ref
            raise
