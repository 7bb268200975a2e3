"""The demo room's scoreboard keeper: a small backend service in miniature.

It listens to the demo room's actions on the bus, as any service of the
platform would, counts gifts and likes, and writes the ``scoreboard``
section at most once per ``interval`` (state is for facts, not for every
event: one write per second however many likes arrive).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgpack

from edge.node import EdgeNode
from room_router.bus import Subscription, room_subject

log = logging.getLogger("liveroom.demo")


class ScoreboardKeeper:
    def __init__(self, node: EdgeNode, room: str, interval: float = 1.0) -> None:
        self._node = node
        self._room = room
        self._interval = interval
        self._score: dict[str, Any] = {"gifts": 0, "likes": 0}
        self._dirty = False
        self._sub: Subscription | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Task[None] | None = None

    def start(self, score: dict[str, Any]) -> None:
        self._score = dict(score)
        self._sub = self._node.bus.subscribe(room_subject(self._room), self._on_message)
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._tick)

    def stop(self) -> None:
        if self._sub is not None:
            self._sub.unsubscribe()
        if self._timer is not None:
            self._timer.cancel()

    def _on_message(self, subject: str, payload: bytes) -> None:
        msg = msgpack.unpackb(payload, raw=False)
        if msg.get("type") != "action":
            return
        body = msg.get("body") if isinstance(msg.get("body"), dict) else {}
        if msg.get("kind") == "gift":
            self._score["gifts"] = self._score.get("gifts", 0) + body.get("count", 1)
            self._dirty = True
        elif msg.get("kind") == "like":
            self._score["likes"] = self._score.get("likes", 0) + body.get("count", 1)
            self._dirty = True

    def _tick(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._tick)
        if self._dirty and (self._writing is None or self._writing.done()):
            self._dirty = False
            self._writing = asyncio.create_task(self._write(dict(self._score)))

    async def _write(self, score: dict[str, Any]) -> None:
        try:
            await self._node.write_state(self._room, "scoreboard", score, None)
        except Exception:
            log.exception("scoreboard write failed")
