"""Moderation on one edge: bans, mutes, kicks, disconnects and room closes
(docs/MODERATION.md), issued here (the backend API, a host's or moderator's
``moderate`` frame) and applied to this edge's connections.

Theory of operation
-------------------
Issuing an op writes the store first (``room_router.moderation.Sanctions``:
memory embedded, Redis in a cluster), then publishes one control message
on ``control.all``; every edge, this one included (the memory bus calls it
back at once), applies it in ``on_control`` to its own connections, so a
ban reaches the user's connections on every edge within a bus hop:
- ban, kick, close: each local connection of the user (of the room, for
  close) in that room gets ``left`` with the reason and leaves the room;
  the connection stays open for its other rooms;
- mute, unmute: the local mute cache of the room is updated;
- disconnect: every local connection of the user is closed 4005.

The bus is at most once: the store is the truth. A join reads the user's
ban (one store read per join); the mutes of a room are loaded into a cache
when a join opens it here, so that checking an action costs a dict lookup
and no I/O (rooms without mutes: one empty-dict test). Every
``refresh_every`` seconds the edge reloads the bans and mutes of the rooms
it serves, so that a lost control message heals within that period.

Immunity (``room_router.moderation.immune``) is checked where a sanction
meets its target, whose role in the room is known there (the connection's
identity); the issuing edge refuses at once a target it knows to be immune.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from edge.auth import Identity
from edge.fanout import Conn, Hub
from edge.metrics import Metrics
from plumbing.ratelog import RateLimitedLog
from room_router.bus import Bus, Subscription, control_subject
from room_router.events import NO_EVENTS, EventSink
from room_router.events import moderation as moderation_event
from room_router.moderation import (
    BAN,
    MUTE,
    Control,
    Sanction,
    Sanctions,
    control_message,
    immune,
    parse_control,
)
from wire.close_codes import CloseCode
from wire.encoded import Encoded
from wire.errors import Banned, Forbidden, Muted, NotFound
from wire.frames import LEFT_BANNED, LEFT_CLOSED, LEFT_KICKED
from wire.incoming import Moderate
from wire.outgoing import left_frame, moderated_frame

# Seconds between two reloads of the served rooms' bans and mutes.
REFRESH_EVERY = 5.0

_KIND_OF_OP = {"ban": BAN, "unban": BAN, "mute": MUTE, "unmute": MUTE}


class Moderation:
    def __init__(self, *, sanctions: Sanctions, bus: Bus, hub: Hub, metrics: Metrics,
                 errlog: RateLimitedLog, clock: Callable[[], float],
                 monotonic: Callable[[], float], users: Mapping[str, set[Conn]],
                 deliver: Callable[[Conn, Encoded, float], bool],
                 remove: Callable[[Conn, str], None],
                 disconnect: Callable[[Conn, int, str], None],
                 refresh_every: float = REFRESH_EVERY,
                 events: EventSink = NO_EVENTS) -> None:
        # Moderation events to the backend (room_router/events.py).
        self.events = events
        self.sanctions = sanctions
        self.bus = bus
        self.hub = hub
        self.metrics = metrics
        self.errlog = errlog
        self.clock = clock
        self._monotonic = monotonic
        self._users = users
        self._deliver = deliver
        # Takes a connection out of a room as a leave does (presence
        # included): ``Rooms.remove``.
        self._take_out = remove
        self._disconnect = disconnect
        self.refresh_every = refresh_every
        # room -> user -> its mute; only rooms with members here (loaded at
        # the join that opens one, dropped when it empties).
        self._mutes: dict[str, dict[str, Sanction]] = {}
        # Mute and unmute messages applied so far: a load of a room's mutes
        # that saw this change while it awaited the store may be older than
        # what the bus said meanwhile, and is not put over it.
        self._mute_news = 0
        self._sub: Subscription | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._refreshing: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------
    def start(self) -> None:
        self._sub = self.bus.subscribe(control_subject(), self.on_control)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a unit test): no periodic refresh
        self._arm()

    def stop(self) -> None:
        if self._sub is not None:
            self._sub.unsubscribe()
            self._sub = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._refreshing is not None:
            self._refreshing.cancel()
            self._refreshing = None

    def _arm(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.refresh_every, self._tick)

    def _tick(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self.refresh())
        self._arm()

    # -- checks ----------------------------------------------------------
    async def check_join(self, ident: Identity, room: str, ref: Any) -> None:
        """``banned`` for a banned user (one store read); loads the room's
        mutes when it is not served here yet."""
        now = self.clock()
        ban = await self.sanctions.get(room, BAN, ident.user, now)
        if ban is not None and not immune(ident.role_in(room), ban.by.get("role", "")):
            extra: dict[str, Any] = {"room": room, "reason": ban.reason}
            if ban.until is not None:
                extra["until"] = ban.until
            raise Banned(f"banned from room {room!r}", ref=ref, **extra)
        if room not in self._mutes:
            await self._load_mutes(room, replace=False)

    async def _load_mutes(self, room: str, *, replace: bool) -> None:
        """The room's mutes from the store into the cache; again when a
        mute or unmute came over the bus during the read (at most twice:
        the periodic refresh makes good what is left)."""
        for _ in range(2):
            news = self._mute_news
            loaded = {s.user: s for s in await self.sanctions.list(room, MUTE, self.clock())}
            if news == self._mute_news:
                if replace or room not in self._mutes:
                    self._mutes[room] = loaded
                return

    def check_action(self, ident: Identity, room: str, ref: Any, now: float) -> None:
        """``muted`` for a muted user: the local cache, no I/O."""
        mutes = self._mutes.get(room)
        if not mutes:
            return
        mute = mutes.get(ident.user)
        if mute is None:
            return
        if not mute.active(now):
            del mutes[ident.user]
            return
        if immune(ident.role_in(room), mute.by.get("role", "")):
            return
        extra: dict[str, Any] = {"room": room, "reason": mute.reason}
        if mute.until is not None:
            extra["retry_after"] = round(mute.until - now, 3)
        raise Muted(f"muted in room {room!r}", ref=ref, **extra)

    def room_emptied(self, room: str) -> None:
        self._mutes.pop(room, None)

    # -- issuing (the API and the moderate frame) --------------------------
    async def sanction(self, kind: str, room: str, user: str, seconds: float | None,
                       reason: str, by: Mapping[str, str]) -> Sanction:
        """Ban or mute: stored, then announced to every edge."""
        now = self.clock()
        until = None if seconds is None else round(now + seconds, 3)
        sanction = Sanction(room, user, kind, until, reason, dict(by), now)
        await self.sanctions.put(sanction, now)
        self._publish(kind, room, user, until, reason, by)
        return sanction

    async def lift(self, kind: str, room: str, user: str, by: Mapping[str, str]) -> bool:
        """Unban or unmute; whether there was one to lift."""
        found = await self.sanctions.remove(room, kind, user, self.clock())
        self._publish("un" + kind, room, user, None, "", by)
        return found

    async def listed(self, kind: str, room: str) -> list[Sanction]:
        """The room's active bans or mutes, oldest first."""
        return await self.sanctions.list(room, kind, self.clock())

    def kick(self, room: str, user: str, reason: str, by: Mapping[str, str]) -> None:
        self._publish("kick", room, user, None, reason, by)

    def disconnect(self, user: str, reason: str, by: Mapping[str, str]) -> None:
        self._publish("disconnect", "", user, None, reason, by)

    async def close_room(self, room: str, reason: str, by: Mapping[str, str]) -> None:
        """Members leave with ``closed``; the room's bans and mutes go."""
        await self.sanctions.drop_room(room)
        self._publish("close", room, "", None, reason, by)

    def _publish(self, op: str, room: str, user: str, until: float | None, reason: str,
                 by: Mapping[str, str]) -> None:
        self.metrics.moderation.labels(op).inc()
        self.bus.publish(control_subject(), control_message(op, room, user, until, reason, by))
        if room:  # a disconnect names no room: no room event (docs/BACKEND.md)
            duration = None if until is None else round(until - self.clock(), 3)
            self.events.emit(room, "moderation", moderation_event(
                op, user, by.get("id", ""), duration=duration, reason=reason or None))

    async def moderate(self, ident: Identity, cmd: Moderate) -> dict[str, Any]:
        """A host's or moderator's ``moderate`` frame (authorised by the
        session); the ``moderated`` reply."""
        room, user, op = cmd.room, cmd.user, cmd.op
        assert user is not None
        by = {"id": ident.user, "role": ident.role_in(room)}
        if op in ("ban", "mute", "kick"):
            self._refuse_immune(room, user, by["role"], cmd.ref)
        until = None
        if op in ("ban", "mute"):
            until = (await self.sanction(_KIND_OF_OP[op], room, user, cmd.seconds,
                                         cmd.reason, by)).until
        elif op in ("unban", "unmute"):
            if not await self.lift(_KIND_OF_OP[op], room, user, by):
                raise NotFound(f"user {user!r} has no {_KIND_OF_OP[op]} in room {room!r}",
                               ref=cmd.ref, room=room, user=user)
        else:
            self.kick(room, user, cmd.reason, by)
        return moderated_frame(room, op, cmd.ref, user=user, until=until)

    def _refuse_immune(self, room: str, user: str, by_role: str, ref: Any) -> None:
        """``forbidden`` when a connection of the target here shows it is
        immune to ``by_role`` (elsewhere, its edge spares it all the same)."""
        for conn in self._users.get(user, ()):
            if conn.identity is not None and immune(conn.identity.role_in(room), by_role):
                raise Forbidden(f"a {by_role} may not moderate the {conn.identity.role_in(room)}"
                                f" {user!r} of room {room!r}", ref=ref, room=room, user=user,
                                reason="immune")

    # -- applying (every edge) ---------------------------------------------
    def on_control(self, subject: str, payload: bytes) -> None:
        msg = parse_control(payload)
        if msg is None:
            return
        try:
            self._apply(msg)
        except Exception as exc:
            self.errlog.exception(f"control:{type(exc).__name__}",
                                  "applying a control message (%s) failed", msg.op, exc=exc)

    def _apply(self, msg: Control) -> None:
        if msg.op in ("mute", "unmute"):
            self._mute_news += 1
        if msg.op == "mute":
            mutes = self._mutes.get(msg.room)
            if mutes is not None:
                mutes[msg.user] = Sanction(msg.room, msg.user, MUTE, msg.until, msg.reason,
                                           msg.by, self.clock())
        elif msg.op == "unmute":
            self._mutes.get(msg.room, {}).pop(msg.user, None)
        elif msg.op in ("ban", "kick"):
            reason = LEFT_BANNED if msg.op == "ban" else LEFT_KICKED
            conns = [c for c in self._users.get(msg.user, ()) if msg.room in c.rooms]
            self._remove(msg.room, conns, reason, msg.until, msg.reason, msg.by)
        elif msg.op == "close":
            local = self.hub.rooms.get(msg.room)
            if local is not None:
                self._remove(msg.room, list(local.members), LEFT_CLOSED, None, msg.reason,
                             msg.by)
            self._mutes.pop(msg.room, None)
        elif msg.op == "disconnect":
            for conn in list(self._users.get(msg.user, ())):
                self._disconnect(conn, CloseCode.DISCONNECTED,
                                 msg.reason or "disconnected by the server")

    def _remove(self, room: str, conns: list[Conn], reason: str, until: float | None,
                message: str, by: Mapping[str, str]) -> int:
        """``left`` with ``reason`` to each of ``conns`` not immune, and out
        of ``room``; how many."""
        extra: dict[str, Any] = {}
        if until is not None:
            extra["until"] = until
        if message:
            extra["message"] = message
        enc = Encoded(left_frame(room, None, reason, **extra))
        now = self._monotonic()
        removed = 0
        for conn in conns:
            if reason != LEFT_CLOSED and conn.identity is not None and \
                    immune(conn.identity.role_in(room), by.get("role", "")):
                continue
            self._deliver(conn, enc, now)
            self._take_out(conn, room)
            removed += 1
        return removed

    # -- healing -----------------------------------------------------------
    async def refresh(self) -> None:
        """Reload the bans and mutes of the rooms served here: a control
        message the bus lost is made good within ``refresh_every``."""
        for room in list(self._mutes):
            if room not in self.hub.rooms:
                self._mutes.pop(room, None)
        for room in list(self.hub.rooms):
            try:
                await self._load_mutes(room, replace=True)
                bans = await self.sanctions.list(room, BAN, self.clock())
            except Exception as exc:
                self.errlog.exception(f"refresh:{type(exc).__name__}",
                                      "reloading the sanctions of room %r failed", room[:64],
                                      exc=exc)
                continue
            if room not in self.hub.rooms:
                self._mutes.pop(room, None)  # emptied while we read
            for ban in bans:
                conns = [c for c in self._users.get(ban.user, ()) if room in c.rooms]
                if conns:
                    self._remove(room, conns, LEFT_BANNED, ban.until, ban.reason, ban.by)
