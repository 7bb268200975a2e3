"""A joined room as the application sees it: its state (values, versions,
epoch), its actions, members online, presence, history, and why it was left.

Events (``room.on(event, handler)``):

- ``state`` (section, value): a section changed (pushed, or brought by a
  ``joined`` or ``sync``);
- ``action`` (frame): an action, once (de-duplicated by its ``id``);
- ``resumed`` (recovered, reason): a rejoin after a reconnect; ``recovered``
  False means the state was replaced, not patched (PROTOCOL.md, "Honest
  recovery");
- ``online`` (count), ``presence`` (frame), ``retract`` (action id),
  ``left`` (frame: ``reason`` kicked, banned or closed when the server took
  the client out), ``error`` (an error frame about this room).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from clients.python.events import Emitter
from clients.python.link import Link, LinkLost
from clients.python.roomstate import RoomState, SeenIds
from wire.frames import LEFT, MODERATED, SYNC
from wire.requests import (
    action_request,
    leave_request,
    moderate_request,
    state_request,
    sync_request,
)


class Owner(Protocol):
    """What a room needs of its client."""

    async def send(self, frame: dict[str, Any]) -> None: ...

    async def current_link(self) -> Link: ...

    def forget(self, room: str) -> None: ...


class Room(Emitter):
    def __init__(self, owner: Owner, name: str) -> None:
        super().__init__()
        self._owner = owner
        self.name = name
        self.state = RoomState()
        self.online = 0
        self.presence: dict[str, dict[str, Any]] | None = None  # None: no list (off or capped)
        self.presence_capped = False
        self.history: list[dict[str, Any]] = []
        self.state_mode = "push"
        self.recovered: bool | None = None  # the last rejoin's answer (None: a fresh join)
        self.recovery_reason: str | None = None
        self.left: dict[str, Any] | None = None  # the left frame once out of the room
        self.joined = asyncio.Event()
        self._seen = SeenIds()
        self._syncing = False
        self._poll: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what the application reads ---------------------------------------
    @property
    def values(self) -> dict[str, Any]:
        """Section name -> its latest value."""
        return self.state.values

    @property
    def versions(self) -> dict[str, int]:
        return self.state.versions

    @property
    def epoch(self) -> str | None:
        return self.state.epoch

    # -- what the application does ----------------------------------------
    async def send(self, kind: str, body: Any = None, client_id: str | None = None) -> None:
        """Send an action (at most once, by design: no reply; an error comes
        back as the ``error`` event). ``client_id`` comes back as the
        action's ``client_id``."""
        await self._owner.send(action_request(self.name, kind, body, client_id))

    async def set(self, section: str, value: Any, expect: int | None = None) -> None:
        """Write a section (``expect``: only if its partial is still this;
        a ``version_conflict`` comes back as the ``error`` event)."""
        await self._owner.send(state_request(self.name, section, value, expect))

    async def moderate(self, op: str, user: str | None = None, action_id: str | None = None,
                       seconds: float | None = None, reason: str | None = None,
                       timeout: float = 10.0) -> dict[str, Any]:
        """As a host or moderator of the room: ``ban``, ``unban``, ``mute``,
        ``unmute``, ``kick`` a user or ``retract`` an action; the
        ``moderated`` reply, or the ``error``."""
        link = await self._owner.current_link()
        return await link.request(moderate_request(self.name, op, user, action_id, seconds,
                                                   reason), (MODERATED,), timeout)

    async def leave(self, timeout: float = 10.0) -> None:
        self._owner.forget(self.name)
        self._stop()
        with contextlib.suppress(LinkLost, TimeoutError):
            link = await self._owner.current_link()
            await link.request(leave_request(self.name), (LEFT,), timeout)

    # -- frames, from the client's reader ---------------------------------
    async def on_frame(self, link: Link, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind in ("joined", "sync"):
            await self._snapshot(link, frame)
        elif kind == "state":
            if self.state.apply(frame):
                await self.emit("state", frame["section"], frame["value"])
        elif kind == "action":
            if self._seen.first_time(frame.get("id")):
                await self.emit("action", frame)
        elif kind == "online":
            self.online = int(frame["count"])
            await self.emit("online", self.online)
        elif kind == "presence":
            self._presence(frame)
            await self.emit("presence", frame)
        elif kind == "retract":
            self.history = [a for a in self.history if a.get("id") != frame.get("id")]
            await self.emit("retract", frame.get("id"))
        elif kind == "state_mode":
            self._mode(link, frame)
        elif kind == "left":
            self.left = frame
            self._owner.forget(self.name)
            self._stop()
            await self.emit("left", frame)
        elif kind == "error":
            await self.emit("error", frame)

    async def _snapshot(self, link: Link, frame: dict[str, Any]) -> None:
        changed = self.state.snapshot(frame)
        self._syncing = False
        if frame.get("type") == "joined":
            self.online = int(frame.get("members", self.online))
            if "presence" in frame:
                self.presence = {m["id"]: m for m in frame["presence"]}
            self.presence_capped = bool(frame.get("presence_capped", False))
            if "history" in frame:
                self.history = list(frame["history"])
                for action in self.history:
                    self._seen.first_time(action.get("id"))
            self._mode(link, frame)
            self.joined.set()
        for section in changed:
            await self.emit("state", section, self.state.values.get(section))
        if "recovered" in frame:
            self.recovered = bool(frame["recovered"])
            self.recovery_reason = frame.get("reason")
            await self.emit("resumed", self.recovered, self.recovery_reason)

    def _presence(self, frame: dict[str, Any]) -> None:
        if frame.get("capped"):
            self.presence, self.presence_capped = None, True
            return
        if self.presence is None:
            # Back under the cap: the frame's joins are the whole list.
            self.presence, self.presence_capped = {}, False
        for member in frame.get("joins", ()):
            self.presence[member["id"]] = member
        for user in frame.get("leaves", ()):
            self.presence.pop(user, None)

    def _mode(self, link: Link, frame: dict[str, Any]) -> None:
        """Polling mode: the edge stops pushing ``state``; this client then
        asks for what moved with ``sync`` every ``interval`` (the same
        versions, over the same connection; PROTOCOL.md, "state_mode")."""
        mode = frame.get("state_mode", "push")
        was, self.state_mode = self.state_mode, mode
        if mode == "poll" and self._poll is None:
            interval = float(frame.get("poll", {}).get("interval", 1.0))
            self._poll = asyncio.create_task(self._poll_by_sync(interval))
        elif mode == "push" and self._poll is not None:
            self._poll.cancel()
            self._poll = None
            if was == "poll":
                self.sync(link)

    async def _poll_by_sync(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(LinkLost):
                self.sync(await self._owner.current_link())

    # -- versions ----------------------------------------------------------
    def check(self, link: Link) -> None:
        """After a whole transport frame: ``sync`` if a change was missed."""
        if self.state.needs_sync():
            self.sync(link)

    def sync(self, link: Link) -> None:
        if self._syncing or not link.alive:
            return
        self._syncing = True
        task = asyncio.create_task(self._sync(link))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sync(self, link: Link) -> None:
        try:
            for _ in range(3):
                known, epoch = self.state.resume_args()
                reply = await link.request(sync_request(self.name, known, epoch), (SYNC,))
                if reply.get("type") == SYNC:
                    return
                # rate_limited: wait as told; anything else: the next gap retries
                if reply.get("code") != "rate_limited":
                    return
                await asyncio.sleep(float(reply.get("retry_after", 0.5)))
        except (LinkLost, TimeoutError):
            pass  # the rejoin on the next connection brings the versions
        finally:
            self._syncing = False

    def reset(self) -> None:
        """The connection is gone: the rejoin will bring the state."""
        self.joined.clear()
        self._syncing = False

    def _stop(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
