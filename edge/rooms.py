"""A connection's rooms on one edge node: ``join`` (or a redirect when this
edge does not serve the room), ``leave`` and ``sync``, with the state reply
that ``joined`` and ``sync`` share; the state mode of big rooms (push or
poll); and ``redirect``, which moves a room's local members to another group.

Membership itself is the hub's (``edge.fanout.Hub``); the node opens a room's
bus subscription when its first member joins and closes it when the last one
leaves (``opened`` and ``emptied``). Replies go out through the node's writer
(``deliver``, ``reply``) and broadcasts through its accounting (``account``),
so that failures are counted and logged in one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from edge.config import EdgeConfig
from edge.fanout import Conn, FanoutResult, Hub
from edge.presence import Presence
from room_router.gate import RoomGate
from room_router.presence import Member
from state_versions.store import StateStore
from wire.encoded import Encoded
from wire.errors import InternalError
from wire.frames import REDIRECT_MOVED, REDIRECT_NOT_OWNER
from wire.incoming import Join, Leave, Sync
from wire.outgoing import (
    RoomVersions,
    joined_frame,
    left_frame,
    redirect_frame,
    state_mode_frame,
    sync_frame,
)
from wire.urls import head_url


async def _nothing() -> None:
    return None

class Rooms:
    def __init__(self, *, config: EdgeConfig, store: StateStore, hub: Hub,
                 monotonic: Callable[[], float],
                 deliver: Callable[[Conn, Encoded, float], bool],
                 reply: Callable[[Conn, dict[str, Any]], None],
                 account: Callable[[FanoutResult, float], None],
                 opened: Callable[[str], None], emptied: Callable[[str], None],
                 settled: Callable[[], Awaitable[None]] | None = None,
                 history: Callable[[str], Awaitable[list[dict[str, Any]]] | None] | None = None,
                 presence: Presence | None = None) -> None:
        self.config = config
        self.store = store
        self.hub = hub
        self._monotonic = monotonic
        self._deliver = deliver
        self._reply = reply
        self._account = account
        self._opened = opened
        # The bus's ``settled`` (room_router/bus.py): None in tests without one.
        self._settled = settled or _nothing
        self._emptied = emptied
        # A room's kept actions for ``joined`` (edge/history.py): None for a
        # room that keeps none.
        self._history = history
        self._presence = presence
        # The distributed deployment sets this (liveroom.distributed, through
        # EdgeNode.gate): it says whether this edge serves a room, else the
        # join gets a redirect.
        self.gate: RoomGate | None = None

    async def join(self, conn: Conn, cmd: Join, member: Member | None = None) -> int:
        """Join, answer ``joined`` (or a redirect); the reply's size.
        ``member``: the user as the room's presence shows it, only in a
        room that keeps presence (its list then rides in ``joined``)."""
        room = cmd.room
        if self.gate is not None and room not in conn.rooms:
            route = await self.gate.redirect_for(room)
            if route is not None:
                self._reply(conn, redirect_frame(room, route.urls, REDIRECT_NOT_OWNER,
                                                 cmd.ref))
                return 0
        if self.hub.join(conn, room):
            self._opened(room)
            # The room's subscription in place before ``joined``: what is
            # published after the answer reaches the member (bounded wait).
            await self._settled()
        self.update_state_mode(room)
        presence = None
        if member is not None and self._presence is not None:
            presence = await self._presence.join(conn, room, member)
        body = await self._state_reply(room, cmd.known, cmd.epoch)
        pending = self._history(room) if self._history is not None else None
        history = await pending if pending is not None else None
        return self._state_to(conn, joined_frame(body, cmd.ref, self.hub.count(room),
                                                 self.poll_of(room), history=history,
                                                 presence=presence))

    def leave(self, conn: Conn, cmd: Leave) -> None:
        self.remove(conn, cmd.room)
        self._reply(conn, left_frame(cmd.room, cmd.ref))

    def remove(self, conn: Conn, room: str) -> None:
        """Take ``conn`` out of ``room`` (a leave, a redirect, a kick, a ban,
        a closed room): out of the room's presence, then the hub's members;
        the room's bus subscription goes with its last local member."""
        if self._presence is not None:
            self._presence.left(conn, room)
        if self.hub.leave(conn, room):
            self._emptied(room)

    async def sync(self, conn: Conn, cmd: Sync) -> int:
        """Answer ``sync``; the reply's size."""
        body = await self._state_reply(cmd.room, cmd.known, cmd.epoch)
        return self._state_to(conn, sync_frame(body, cmd.ref))

    def poll_of(self, room: str) -> tuple[str, float] | None:
        """Where and how often the room's members poll its state; None
        while it is pushed to them."""
        local = self.hub.rooms.get(room)
        if local is None or not local.poll_mode:
            return None
        return head_url(room), self.config.poll_interval

    def update_state_mode(self, room: str) -> None:
        """Big rooms take state by polling the CDN: one cached head serves
        them all, and the edge stops pushing state to every member. Switches
        at ``poll_threshold`` members and back below half of it, and tells the
        members with a ``state_mode`` frame."""
        threshold = self.config.poll_threshold
        local = self.hub.rooms.get(room)
        if local is None or threshold <= 0:
            return
        n = len(local.members)
        poll = n >= threshold // 2 if local.poll_mode else n >= threshold
        if poll == local.poll_mode:
            return
        local.poll_mode = poll
        now = self._monotonic()
        enc = Encoded(state_mode_frame(room, self.poll_of(room)))
        self._account(self.hub.broadcast(room, enc, now), now)

    def redirect(self, room: str, urls: list[str] | tuple[str, ...],
                 reason: str = REDIRECT_MOVED) -> int:
        """Tell the room's local members to join it at ``urls`` (the room
        moved to another group) and drop them from it here; returns how many
        were told. Their other rooms and the connection stay as they are."""
        local = self.hub.rooms.get(room)
        if local is None:
            return 0
        enc = Encoded(redirect_frame(room, urls, reason))
        now = self._monotonic()
        members = list(local.members)
        for conn in members:
            self._deliver(conn, enc, now)
            self.remove(conn, room)
        return len(members)

    def _state_to(self, conn: Conn, reply: dict[str, Any]) -> int:
        """Send a ``joined`` or ``sync`` reply; its size in the connection's
        encoding (already made for the write), which the session charges
        to the connection's frame budget: re-encoding a room is not free."""
        enc = Encoded(reply)
        if not self._deliver(conn, enc, self._monotonic()):
            # Not encodable: counted and logged by _deliver; the client gets
            # ``internal`` (as _reply's fallback) and nothing is encoded again.
            raise InternalError()
        return len(enc.payload(conn.variant))

    async def _state_reply(self, room: str, known: dict[str, int],
                           epoch: str | None) -> RoomVersions:
        """The body shared by ``joined`` and ``sync``: the room's versions and
        the sections the client is missing. Versions the client kept from
        another store epoch (the store was reset) mean nothing: it gets every
        section again."""
        resuming = bool(known) or epoch is not None
        reason: str | None = None
        if epoch is not None and epoch != self.store.epoch:
            known, reason = {}, "epoch_changed"
        total, versions = await self.store.versions(room)
        if any(v > versions.get(s, 0) for s, v in known.items()):
            # The client holds versions the store never reached: the store
            # lost history. Its versions mean nothing here: resend all.
            known, reason = {}, "versions_ahead"
        elif known and epoch is None:
            reason = "epoch_unknown"  # comparable only if from this epoch
        _, outdated = await self.store.changed_since(room, known)
        # Honest recovery (only when resuming): true only when the client's
        # versions were comparable, so these sections bring it exactly up to date.
        return RoomVersions(room, self.store.epoch, total, versions,
                            [(s.name, s.partial, s.value) for s in outdated],
                            (reason is None) if resuming else None, reason)
