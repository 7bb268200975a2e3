"""The liveroom client for Python asyncio: one object that stays connected.

It connects with a token provider and renews the connection with a fresh
token before the token expires; reconnects after a drop with backoff and
jitter (what the close code says: PROTOCOL.md, "Close codes"); rejoins every
room with its versions and epoch and says whether the state was recovered;
follows redirects; hands each peer message to the application exactly once
across reconnects (the inbox cursor) and acknowledges it; speaks msgpack or
JSON over a WebSocket (``ws://…/ws``) or WebTransport (``https://…/wt``).

    client = await Client.connect("ws://127.0.0.1:8080/ws", get_token)
    room = await client.join("demo")
    room.on("action", lambda frame: print(frame["body"]))
    await room.send("comment", {"text": "hi"})

Events (``client.on``): ``peer`` (frame, once), ``inbox`` (the replay's
``inbox`` frame), ``connect`` (welcome), ``disconnect`` (close code or None),
``closed`` (code: the client gave up), ``error`` (an error frame that no
request or room took).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from clients.python.events import Emitter
from clients.python.inbox import PeerCursor
from clients.python.link import Link, LinkLost
from clients.python.policy import (
    GIVE_UP,
    RENEW_TOKEN,
    Backoff,
    after_close,
    after_hello_error,
    refresh_delay,
    token_expiry,
)
from clients.python.room import Room
from edge.client import ClosedError, LiveroomClient
from wire.codecs import MSGPACK
from wire.frames import JOINED, PEER_ACK, REDIRECT
from wire.requests import hello_request, join_request, peer_request

log = logging.getLogger("liveroom.client")

TokenSource = str | Callable[[], str | Awaitable[str]]
UrlSource = str | Callable[[], str | Awaitable[str]]
# Redirects followed in a row before backing off (views of the live groups
# may differ for a heartbeat while a group joins or leaves).
MAX_REDIRECTS = 4


class GaveUp(Exception):
    """The server refused in a way that retrying would not change (a bad
    token, a ban from a room, a disconnect by the backend)."""

    def __init__(self, why: Any) -> None:
        super().__init__(f"gave up: {why}")
        self.why = why


class RequestError(Exception):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.frame = frame
        self.code = frame.get("code")


class _Redirected(Exception):
    def __init__(self, url: str) -> None:
        self.url = url


class Client(Emitter):
    def __init__(self, url: UrlSource, token: TokenSource, *, codec: str = MSGPACK,
                 cert_sha256: str | None = None, fallback_url: str | None = None,
                 session: aiohttp.ClientSession | None = None, heartbeat: float = 10.0,
                 backoff: Backoff | None = None, refresh_margin: float = 30.0,
                 inbox_cursor: int = 0, timeout: float = 10.0) -> None:
        super().__init__()
        self._url, self._token = url, token
        self.codec, self._cert, self._fallback = codec, cert_sha256, fallback_url
        self._session, self._heartbeat = session, heartbeat
        self.backoff = backoff or Backoff()
        self._margin, self._timeout = refresh_margin, timeout
        self.rooms: dict[str, Room] = {}
        self.inbox = PeerCursor(inbox_cursor)
        self.welcome: dict[str, Any] | None = None
        self.connects = 0  # connections established (the first one included)
        self.closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._link: Link | None = None
        self._up = asyncio.Event()
        self._redirect: str | None = None
        self._swap = asyncio.Lock()
        self._peer_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._last_token: str | None = None

    @classmethod
    async def connect(cls, url: UrlSource, token: TokenSource, **options: Any) -> Client:
        """Connect (retrying transient failures for ``timeout``); GaveUp if
        the server refuses for good."""
        client = cls(url, token, **options)
        try:
            await asyncio.wait_for(client._reconnect(first=True), client._timeout)
        except BaseException:
            await client.close()
            raise
        client._spawn(client._supervise())
        return client

    # -- the application's side ---------------------------------------------
    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.alive and self._up.is_set()

    async def join(self, name: str) -> Room:
        """Join ``name`` (rejoined by versions after every reconnect)."""
        room = self.rooms.get(name)
        if room is not None and room.joined.is_set():
            return room
        room = room or Room(self, name)
        self.rooms[name] = room
        link = await self.current_link()
        try:
            reply = await link.request(join_request(name), (JOINED, REDIRECT), self._timeout)
        except LinkLost:
            reply = {}  # the reconnect rejoins it
        if reply.get("type") == "error":
            self.forget(name)
            raise RequestError(reply)
        if reply.get("type") == REDIRECT:
            self._redirect = reply["url"]
            link.end(None)
        await asyncio.wait_for(room.joined.wait(), self._timeout)
        return room

    async def send_peer(self, to: str, body: Any, msg_id: str,
                        timeout: float = 30.0) -> dict[str, Any]:
        """Send a peer message; its ``peer_ack`` once stored. Retried with
        the same ``msg_id`` across reconnects (the server de-duplicates, so
        it is stored once); RequestError for a refusal that waiting does not
        cure (``inbox_full``, a bad field)."""
        async with asyncio.timeout(timeout):
            while True:
                link = await self.current_link()
                try:
                    reply = await link.request(peer_request(to, body, msg_id), (PEER_ACK,),
                                               self._timeout)
                except (LinkLost, TimeoutError):
                    continue
                if reply.get("type") == PEER_ACK:
                    return reply
                if reply.get("code") in ("rate_limited", "internal", "unavailable"):
                    await asyncio.sleep(float(reply.get("retry_after", 0.2)))
                    continue
                raise RequestError(reply)

    async def send(self, frame: dict[str, Any]) -> None:
        """Send a frame on the current connection (waiting for one)."""
        for _ in range(3):
            link = await self.current_link()
            try:
                await link.send(frame)
                return
            except LinkLost:
                continue
        raise LinkLost()

    async def current_link(self) -> Link:
        """The connection, once there is one (``timeout`` at most)."""
        async with asyncio.timeout(self._timeout):
            while True:
                if self.closed.done():
                    raise GaveUp(self.closed.result())
                link = self._link
                if link is not None and link.alive and self._up.is_set():
                    return link
                await self._up.wait()
                if self._link is not None and not self._link.alive:
                    await asyncio.sleep(0.01)

    def forget(self, room: str) -> None:
        self.rooms.pop(room, None)

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for room in self.rooms.values():
            room._stop()
        if self._link is not None:
            self._link.end(1000)
            await self._link._close()
        if not self.closed.done():
            self.closed.set_result(1000)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- staying connected --------------------------------------------------
    async def _supervise(self) -> None:
        """Wait for the connection to end; reconnect as its close code says."""
        while not self._closing:
            link = self._link
            assert link is not None
            code = await link.done
            if self._closing:
                return
            if link is not self._link:
                continue  # replaced by a fresher one (a token renewal)
            self._up.clear()
            for room in self.rooms.values():
                room.reset()
            await self.emit("disconnect", code)
            decision = after_close(code)
            if decision == GIVE_UP and self._redirect is None:
                await self._give_up(code)
                return
            try:
                await self._reconnect(immediate=decision == RENEW_TOKEN
                                      or self._redirect is not None)
            except GaveUp as exc:
                await self._give_up(exc.why)
                return

    async def _reconnect(self, first: bool = False, immediate: bool = True) -> None:
        """Connect again until it works; the waits grow, with jitter."""
        hops = 0
        while True:
            if not (first or immediate):
                await asyncio.sleep(self.backoff.next())
            first = False
            try:
                async with self._swap:
                    link = await self._establish()
                    self._install(link)
                self.backoff.reset()
                return
            except _Redirected as r:
                hops += 1
                self._redirect = r.url if hops <= MAX_REDIRECTS else None
                immediate = hops <= MAX_REDIRECTS
            except GaveUp:
                raise
            except (OSError, aiohttp.ClientError, ClosedError, TimeoutError, LinkLost,
                    RequestError) as exc:
                log.info("connect failed: %r", exc)
                immediate = False

    async def _establish(self) -> Link:
        """A new connection: hello (with the inbox cursor), then every room
        rejoined with its versions and epoch."""
        url = self._redirect or await _resolve(self._url)
        self._redirect = None
        conn = await self._open(url)
        try:
            token = await _resolve(self._token)
            await conn.send(hello_request(token, self.inbox.cursor))
            first = await conn.recv(self._timeout)
        except BaseException:
            await conn.close()
            raise
        if first.get("type") != "welcome":
            await conn.close()
            decision = after_hello_error(first)
            if decision == GIVE_UP:
                raise GaveUp(first)
            if decision == RENEW_TOKEN:
                raise TimeoutError("token expired at hello: renewing")
            raise RequestError(first)
        self._last_token = token
        link = Link(conn, first, self._on_frame, self._heartbeat)
        link.start()
        try:
            for room in list(self.rooms.values()):
                await self._rejoin(link, room)
        except BaseException:
            link.end(None)
            raise
        return link

    async def _open(self, url: str) -> LiveroomClient:
        try:
            return await asyncio.wait_for(
                LiveroomClient.open(url, codec=self.codec, session=self._session,
                                    cert_sha256=self._cert), self._timeout)
        except (OSError, aiohttp.ClientError, TimeoutError, ConnectionError):
            if self._fallback is None or url == self._fallback:
                raise
            log.info("cannot open %s: falling back to %s", url, self._fallback)
            return await asyncio.wait_for(
                LiveroomClient.open(self._fallback, codec=self.codec, session=self._session),
                self._timeout)

    async def _rejoin(self, link: Link, room: Room) -> None:
        known, epoch = room.state.resume_args()
        reply = await link.request(join_request(room.name, known, epoch), (JOINED, REDIRECT),
                                   self._timeout)
        if reply.get("type") == REDIRECT:
            raise _Redirected(reply["url"])
        if reply.get("type") == "error":
            if reply.get("advice") in ("give_up", "fix"):
                # banned, forbidden, rejected: this room is over, not the client
                self.forget(room.name)
                room.left = reply
                await room.emit("left", reply)
                return
            raise RequestError(reply)

    def _install(self, link: Link) -> None:
        old, self._link = self._link, link
        self.welcome = link.welcome
        self.connects += 1
        self._up.set()
        if old is not None and old is not link:
            old.end(1000)
        delay = refresh_delay(self._expiry(), time.time(), self._margin)
        if delay is not None:
            self._spawn(self._renew_after(link, delay))
        self._spawn(self.emit("connect", link.welcome))

    def _expiry(self) -> float | None:
        return token_expiry(self._last_token) if self._last_token else None

    async def _renew_after(self, link: Link, delay: float) -> None:
        """Before the token expires: a new connection with a fresh token,
        then the old one closed (make before break)."""
        await asyncio.sleep(delay)
        while link is self._link and link.alive and not self._closing:
            try:
                async with self._swap:
                    if link is not self._link or not link.alive:
                        return
                    fresh = await self._establish()
                    self._install(fresh)
                return
            except GaveUp as exc:
                await self._give_up(exc.why)
                return
            except Exception as exc:
                log.info("token renewal failed, retrying: %r", exc)
                await asyncio.sleep(self.backoff.next())

    async def _give_up(self, why: Any) -> None:
        self._up.set()  # wake waiters: they find ``closed`` done
        if not self.closed.done():
            self.closed.set_result(why)
        await self.emit("closed", why)

    # -- frames -------------------------------------------------------------
    async def _on_frame(self, link: Link, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "peer":
            await self._on_peer(link, frame)
        elif kind == "inbox":
            await self.emit("inbox", frame)
        elif kind == REDIRECT and "ref" not in frame:
            # the room moved to another group: reconnect there
            self._redirect = frame.get("url")
            link.end(None)
            return
        elif kind == "error" and not link.awaited(frame):
            room = self.rooms.get(frame.get("room", ""))
            await (room.on_frame(link, frame) if room else self.emit("error", frame))
        elif (room := self.rooms.get(frame.get("room", ""))) is not None:
            await room.on_frame(link, frame)
        if link.conn.buffered == 0:
            # the end of a transport frame (a whole batch): the invariant
            for r in list(self.rooms.values()):
                if r.joined.is_set():
                    r.check(link)
            await link.ack_peers(self.inbox.cursor)

    async def _on_peer(self, link: Link, frame: dict[str, Any]) -> None:
        seq = frame.get("seq")
        if isinstance(seq, int):
            link.peer_shown = max(link.peer_shown, seq)
        async with self._peer_lock:
            if not self.inbox.fresh(frame):
                return
            await self.emit("peer", frame)
            self.inbox.done(frame)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _resolve(source: str | Callable[[], str | Awaitable[str]]) -> str:
    if isinstance(source, str):
        return source
    value = source()
    if inspect.isawaitable(value):
        value = await value
    return str(value)
