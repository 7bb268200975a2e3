"""One connection of the client: the transport (``edge.client.LiveroomClient``,
WebSocket or WebTransport), the task that reads it, replies matched to
requests by ``ref``, and a heartbeat.

A client holds one link at a time, two while it renews its token (the new
one is set up before the old one is closed). Every frame a link reads goes,
in order, to the client's ``on_frame`` first, then to the request waiting
for it: a ``sync`` reply is applied exactly where it stands among the
``state`` frames.

The heartbeat exists for WebTransport: a killed server sends no close and
QUIC's own idle timeout is long, so a link that has heard nothing (not even
a ``pong``) for three heartbeats is declared dead and the client reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from clients.python.inbox import ack_upto
from edge.client import ClosedError, LiveroomClient
from wire.frames import ERROR
from wire.requests import peer_ack_request, ping_request

log = logging.getLogger("liveroom.client")


class LinkLost(Exception):
    """The connection ended before the reply came."""


OnFrame = Callable[["Link", dict[str, Any]], Awaitable[None]]


class Link:
    def __init__(self, conn: LiveroomClient, welcome: dict[str, Any], on_frame: OnFrame,
                 heartbeat: float) -> None:
        self.conn = conn
        self.welcome = welcome
        self._on_frame = on_frame
        self._heartbeat = heartbeat
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[int | None] = loop.create_future()
        self._waiters: dict[int, tuple[tuple[str, ...], asyncio.Future[dict[str, Any]]]] = {}
        self._refs = itertools.count(1)
        self._last_heard = loop.time()
        self._tasks: list[asyncio.Task[None]] = []
        self.peer_shown = 0  # the highest peer seq this connection was shown
        self.peer_acked = 0

    @property
    def alive(self) -> bool:
        return not self.done.done()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._read()),
                       asyncio.create_task(self._beat())]

    async def _read(self) -> None:
        code: int | None = None
        try:
            while True:
                frame = await self.conn.recv(None)
                self._last_heard = asyncio.get_running_loop().time()
                await self._on_frame(self, frame)
                self._resolve(frame)
        except ClosedError as exc:
            code = exc.code
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a transport that failed: reconnect
            log.info("connection lost: %r", exc)
        self.end(code)

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while self.alive:
            await asyncio.sleep(self._heartbeat)
            if loop.time() - self._last_heard > 3 * self._heartbeat:
                log.info("no frame for %.1f s: the connection is dead", 3 * self._heartbeat)
                self.end(None)
                return
            with contextlib.suppress(LinkLost):
                await self.send(ping_request())

    def _resolve(self, frame: dict[str, Any]) -> None:
        ref = frame.get("ref")
        if not isinstance(ref, int) or ref not in self._waiters:
            return
        replies, fut = self._waiters[ref]
        if frame.get("type") in replies or frame.get("type") == ERROR:
            del self._waiters[ref]
            if not fut.done():
                fut.set_result(frame)

    def awaited(self, frame: dict[str, Any]) -> bool:
        """Whether a request waits for this reply (its errors are its own)."""
        return frame.get("ref") in self._waiters

    async def send(self, frame: dict[str, Any]) -> None:
        if not self.alive:
            raise LinkLost()
        try:
            await self.conn.send(frame)
        except Exception as exc:
            self.end(None)
            raise LinkLost() from exc

    async def request(self, frame: dict[str, Any], replies: tuple[str, ...],
                      timeout: float = 10.0) -> dict[str, Any]:
        """Send ``frame`` with a fresh ``ref``; its reply of a type in
        ``replies``, or its ``error``. LinkLost if the connection ends first."""
        ref = next(self._refs)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[ref] = (replies, fut)
        try:
            await self.send({**frame, "ref": ref})
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.pop(ref, None)

    async def ack_peers(self, cursor: int) -> None:
        """Acknowledge what the application processed, up to what this
        connection was shown (the server clamps to that anyway)."""
        upto = ack_upto(cursor, self.peer_shown, self.peer_acked)
        if upto is not None:
            self.peer_acked = upto
            with contextlib.suppress(LinkLost):
                await self.send(peer_ack_request(upto))

    def end(self, code: int | None) -> None:
        """Close this link (``code``: why, as the client's supervisor reads it)."""
        if self.done.done():
            return
        self.done.set_result(code)
        for _, fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(LinkLost())
        self._waiters.clear()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        closer = asyncio.create_task(self._close())
        self._tasks.append(closer)  # held, so the task is not collected

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.conn.close(), 3.0)
