"""A small asyncio client of the liveroom protocol over WebSocket (aiohttp)
or WebTransport (aioquic, ``edge.wt_client``): a ``ws://…/ws`` URL opens a
WebSocket, an ``https://…/wt`` URL a WebTransport session (pass the server's
``cert_sha256`` for a development certificate).

Used by the tests, the load tests and anything in Python that talks to an
edge. It speaks msgpack (binary frames) or JSON (text frames).

    async with LiveroomClient.connect(url, token) as c:
        await c.join("demo")
        await c.action("demo", "comment", {"text": "hi"})
        frame = await c.expect("action")
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any, Protocol, Self

import aiohttp
import msgpack

from wire.codecs import JSON, MSGPACK
from wire.frames import JOINED, PEER_ACK, REDIRECT
from wire.requests import action_request, hello_request, join_request, peer_request, state_request


class Channel(Protocol):
    """What the client needs of its transport: aiohttp's client WebSocket,
    or ``edge.wt_client.WtConnection``."""

    @property
    def closed(self) -> bool: ...

    @property
    def close_code(self) -> int | None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def send_str(self, data: str) -> None: ...

    async def receive(self, timeout: float | None = None) -> aiohttp.WSMessage: ...

    async def close(self) -> Any: ...


class ClosedError(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed: {code} {reason}")
        self.code = code
        self.reason = reason


class LiveroomClient:
    def __init__(self, session: aiohttp.ClientSession | None, ws: Channel,
                 codec: str, own_session: bool) -> None:
        self.session = session
        self.ws = ws
        self.codec = codec
        self._own_session = own_session
        self._pending: deque[dict[str, Any]] = deque()
        self.welcome: dict[str, Any] | None = None
        self._ref = 0

    @classmethod
    async def open(cls, url: str, *, codec: str = MSGPACK,
                   session: aiohttp.ClientSession | None = None,
                   max_msg_size: int = 4 << 20, cert_sha256: str | None = None) -> Self:
        if url.startswith("https://"):
            from edge.wt_client import WtConnection

            return cls(None, await WtConnection.open(url, cert_sha256=cert_sha256), codec,
                       False)
        own = session is None
        s = session or aiohttp.ClientSession()
        try:
            ws = await s.ws_connect(url, max_msg_size=max_msg_size, autoping=True)
        except BaseException:
            if own:
                await s.close()
            raise
        return cls(s, ws, codec, own)

    @classmethod
    async def connect(cls, url: str, token: str, *, codec: str = MSGPACK,
                      session: aiohttp.ClientSession | None = None,
                      timeout: float = 5.0, inbox_cursor: int | None = None,
                      cert_sha256: str | None = None) -> Self:
        """Open and say hello; raises ClosedError or returns with ``welcome`` set.
        ``inbox_cursor``: the highest peer seq processed before (a resume);
        ``cert_sha256``: for ``https://…/wt`` URLs, the certificate hash to trust."""
        client = await cls.open(url, codec=codec, session=session, cert_sha256=cert_sha256)
        try:
            await client.send(hello_request(token, inbox_cursor))
            first = await client.recv(timeout)
            if first.get("type") != "welcome":
                raise ClosedError(None, f"hello refused: {first}")
            client.welcome = first
        except BaseException:
            await client.close()
            raise
        return client

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.ws.close()
        if self._own_session and self.session is not None:
            await self.session.close()

    def next_ref(self) -> int:
        self._ref += 1
        return self._ref

    async def send(self, frame: dict[str, Any]) -> None:
        if self.codec == MSGPACK:
            await self.ws.send_bytes(msgpack.packb(frame, use_bin_type=True))
        else:
            await self.ws.send_str(json.dumps(frame))

    async def send_raw(self, data: bytes | str) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    @property
    def buffered(self) -> int:
        """Frames already read and not yet returned by ``recv`` (the rest of
        a ``batch``): 0 after the last frame of a WebSocket message, where a
        client checks the state invariant (PROTOCOL.md, "Using the versions")."""
        return len(self._pending)

    async def recv(self, timeout: float | None = 5.0) -> dict[str, Any]:
        """The next frame (a ``batch`` frame is unpacked into its frames);
        ``timeout`` None waits as long as the connection lasts."""
        if self._pending:
            return self._pending.popleft()
        msg = await self.ws.receive(timeout=timeout)
        if msg.type is aiohttp.WSMsgType.BINARY:
            frame = msgpack.unpackb(msg.data, raw=False)
        elif msg.type is aiohttp.WSMsgType.TEXT:
            frame = json.loads(msg.data)
        else:
            raise ClosedError(self.ws.close_code, str(msg.extra or msg.data or ""))
        if frame.get("type") == "batch":
            self._pending.extend(frame["frames"])
            return self._pending.popleft()
        return frame  # type: ignore[no-any-return]

    async def expect(self, ftype: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """Skip frames until one of ``ftype`` whose fields equal ``match``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {ftype} frame matching {match} in {timeout}s")
            frame = await self.recv(left)
            if frame.get("type") == ftype and all(frame.get(k) == v for k, v in match.items()):
                return frame

    async def request(self, frame: dict[str, Any], reply: str | tuple[str, ...],
                      timeout: float = 5.0) -> dict[str, Any]:
        """Send ``frame`` with a fresh ``ref``; the reply of type ``reply`` or
        the ``error`` with that ref, whichever comes first. Frames that arrive
        meanwhile are kept, in order, for the next ``recv``."""
        replies = (reply,) if isinstance(reply, str) else reply
        ref = self.next_ref()
        await self.send({**frame, "ref": ref})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        kept: list[dict[str, Any]] = []
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError(f"no reply to {frame.get('type')} in {timeout}s")
                got = await self.recv(left)
                if got.get("ref") == ref and (got.get("type") in replies
                                              or got.get("type") == "error"):
                    return got
                kept.append(got)
        finally:
            self._pending.extendleft(reversed(kept))

    async def join(self, room: str, known: dict[str, int] | None = None,
                   epoch: str | None = None) -> dict[str, Any]:
        """``joined``, or ``redirect`` when this edge does not serve the room."""
        return await self.request(join_request(room, known, epoch), (JOINED, REDIRECT))

    async def action(self, room: str, kind: str, body: Any) -> None:
        await self.send(action_request(room, kind, body))

    async def set_state(self, room: str, section: str, value: Any,
                        expect: int | None = None) -> None:
        await self.send(state_request(room, section, value, expect))

    async def peer(self, to: str, body: Any, msg_id: str) -> dict[str, Any]:
        return await self.request(peer_request(to, body, msg_id), PEER_ACK)


__all__ = ["JSON", "MSGPACK", "ClosedError", "LiveroomClient"]
