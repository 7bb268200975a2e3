"""How the characters of a ``liveroom agents`` process sit in rooms served by
other processes: ``WebSocketLink`` (a member over the protocol's WebSocket,
found through ``--edge-url`` or the node registry, reconnecting when its
edge goes away) and ``BusWords`` (their words published on the NATS bus).
The command itself is composed in ``liveroom.agents_cli``.

Over the WebSocket the characters are users with role ``agent`` whose tokens
the process mints from the shared JWT secret. Without the bus their words
are ordinary ``action`` frames, so the edge's per-user action rate applies
to them: deltas are then coalesced to one every 0.3 s by default, well
inside the default 5 a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp

from edge.auth import Identity
from edge.client import ClosedError, LiveroomClient
from edge.session import may_write_section
from llm_agents.character import Character
from llm_agents.link import FrameHandler, RoomLink
from llm_agents.service import LinkFactory, agent_credentials
from room_router.bus import Bus, room_subject
from room_router.nodes import NodeRegistry
from room_router.placement import Placement
from wire.codecs import MSGPACK, encode_msgpack
from wire.errors import Forbidden, LiveroomError, Unavailable
from wire.outgoing import ActionIds, action_frame
from wire.requests import state_request

log = logging.getLogger("liveroom.agents")


Locate = Callable[[str], Awaitable[Sequence[str]]]

# Redirects followed in a row before a connect attempt counts as failed (two
# edges that disagree about a room's owner, while the placement settles).
MAX_REDIRECTS = 4


class BusWords:
    """An agents process's words on the NATS bus (``--nats``): stamped and
    encoded here as an edge stamps an action (``seq`` counts this process's
    actions in the room) and published once to the room's subject, so every
    edge with members in the room delivers them, one bus message for the
    whole room. Like the backend API and ``InProcessLink``, this is trusted
    server-side code: the per-user action rate meant for people does not
    throttle a character's token chunks."""

    def __init__(self, bus: Bus, clock: Callable[[], float] = time.time) -> None:
        self.bus = bus
        self._clock = clock
        self._seq: dict[str, int] = {}
        self._ids = ActionIds()

    def publish(self, room: str, kind: str, body: Any, sender: dict[str, Any]) -> None:
        seq = self._seq[room] = self._seq.get(room, 0) + 1
        self.bus.publish(room_subject(room), encode_msgpack(
            action_frame(room, kind, body, sender, seq, self._clock(), self._ids.next())))


class WebSocketLink:
    """An agent's connection to a remote edge.

    ``locate(room)`` answers the edge URL(s) to try (a fixed ``--edge-url``,
    or the room's owner from the node registry with ``--redis``); a
    ``redirect`` answer to the join (or later, when the room moves) is
    followed. When the connection drops the link reconnects, with backoff
    from ``backoff[0]`` to ``backoff[1]`` seconds, locating the room again,
    and re-joins: an edge that dies or restarts costs the character a few
    seconds in the room, not the process.

    Versions of the sections it sees are tracked from ``joined``/``state``
    frames, so its compare-and-set writes name the version it last saw; a
    ``version_conflict`` error brings the current one. Its words go over the
    WebSocket as ``action`` frames (rate-limited like any user's), or on the
    bus when ``words`` is given."""

    def __init__(self, locate: Locate, identity: Identity, token: str,
                 on_frame: FrameHandler, words: BusWords | None = None,
                 backoff: tuple[float, float] = (0.2, 5.0)) -> None:
        self.identity = identity
        self._locate = locate
        self._token = token
        self._on_frame = on_frame
        self._words = words
        self._backoff = backoff
        self._sender = identity.public()
        self._rooms: list[str] = []
        self._client: LiveroomClient | None = None
        self._redirect: list[str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._partials: dict[tuple[str, str], int] = {}
        self.url = ""
        self.reconnects = 0
        self.closed = asyncio.Event()

    async def join(self, room: str) -> None:
        if room not in self._rooms:
            self._rooms.append(room)
        if self._client is None:
            # The first connect raises: a wrong URL or token shows at start.
            await self._connect()
            self._task = asyncio.create_task(self._run(), name=f"link-{self.identity.user}")
        else:
            await self._join_on(self._client, room)

    async def _join_on(self, client: LiveroomClient, room: str) -> list[str] | None:
        """Join ``room`` on ``client``: None when joined, the URLs of a redirect."""
        joined = await client.join(room)
        if joined.get("type") == "redirect":
            return [str(u) for u in joined.get("urls") or [joined["url"]]]
        if joined.get("type") != "joined":
            raise ClosedError(None, f"join {room!r} refused: {joined}")
        self._track(joined)
        self._on_frame(joined)
        return None

    async def _connect(self) -> None:
        """Connect where the link's rooms are served and join them there."""
        urls = self._redirect or list(await self._locate(self._rooms[0]))
        self._redirect = None
        for _ in range(MAX_REDIRECTS + 1):
            if not urls:
                raise Unavailable(f"no edge serves room {self._rooms[0]!r}")
            client = await LiveroomClient.connect(urls[0], self._token, codec=MSGPACK)
            try:
                for room in self._rooms:
                    moved = await self._join_on(client, room)
                    if moved is not None:
                        break
            except BaseException:
                await client.close()
                raise
            if moved is None:
                self._client, self.url = client, urls[0]
                log.info("agent %s: in %s at %s", self.identity.user, ", ".join(self._rooms),
                         self.url)
                return
            await client.close()
            urls = moved
        raise ClosedError(None, f"more than {MAX_REDIRECTS} redirects in a row")

    async def _run(self) -> None:
        while True:
            await self._read()
            delay = self._backoff[0]
            while True:
                await asyncio.sleep(delay)
                try:
                    await self._connect()
                except (OSError, aiohttp.ClientError, ClosedError, TimeoutError,
                        LiveroomError) as exc:
                    delay = min(delay * 2, self._backoff[1])
                    log.warning("agent %s: reconnect failed (%s); again in %.1f s",
                                self.identity.user, exc, delay)
                    continue
                self.reconnects += 1
                break

    async def _read(self) -> None:
        """Hand the frames to the agent until the connection ends or the
        room moves (a ``redirect``, kept for the next connect)."""
        client = self._client
        assert client is not None
        try:
            while True:
                try:
                    frame = await client.recv(timeout=3600)
                except TimeoutError:
                    continue
                if frame.get("type") == "redirect" and frame.get("room") in self._rooms:
                    self._redirect = [str(u) for u in frame.get("urls") or [frame["url"]]]
                    log.info("agent %s: room %s moved to %s", self.identity.user,
                             frame.get("room"), self._redirect[0])
                    return
                self._track(frame)
                self._on_frame(frame)
        except (ClosedError, aiohttp.ClientError) as exc:
            log.warning("agent %s: connection to %s ended: %s", self.identity.user, self.url,
                        exc)
        finally:
            self._client = None
            await client.close()

    def _track(self, frame: dict[str, Any]) -> None:
        room = frame.get("room", "")
        if frame.get("type") in ("joined", "sync"):
            for name, partial in (frame.get("versions") or {}).items():
                self._partials[(room, name)] = int(partial)
        elif frame.get("type") == "state":
            self._partials[(room, frame["section"])] = int(frame["partial"])
        elif frame.get("type") == "error" and frame.get("code") == "version_conflict":
            section = frame.get("section")
            if isinstance(section, str) and isinstance(frame.get("current"), int):
                for key in [k for k in self._partials if k[1] == section]:
                    self._partials[key] = frame["current"]

    def publish(self, room: str, kind: str, body: Any) -> None:
        if self._words is not None:
            self._words.publish(room, kind, body, self._sender)
            return
        client = self._client
        if client is not None and not client.ws.closed:
            task = asyncio.ensure_future(client.action(room, kind, body))
            task.add_done_callback(lambda t: t.exception())

    async def write_state(self, room: str, section: str, value: Any,
                          expected: int | None) -> tuple[int, int]:
        if not may_write_section(self.identity, room, section):
            raise Forbidden(f"agent {self.identity.user!r} may not write {section!r}")
        client = self._client
        if client is None or client.ws.closed:
            raise Unavailable("the agent is reconnecting to its edge")
        await client.send(state_request(room, section, value, expected))
        # No direct reply: the broadcast state frame (or a conflict) updates
        # what section_partial answers next time.
        return (expected or 0) + 1, 0

    async def section_partial(self, room: str, section: str) -> int:
        return self._partials.get((room, section), 0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
            self._client = None
        self.closed.set()


def fixed_edge(url: str) -> Locate:
    async def locate(room: str) -> Sequence[str]:
        return [url]
    return locate


def registry_edges(nodes: NodeRegistry, clock: Callable[[], float] = time.time) -> Locate:
    """The room's owner group in the node registry (rendezvous hashing, as the
    router answers), its nodes in order of preference. A room spread over
    every group accepts members on its owner's edges too."""
    async def locate(room: str) -> Sequence[str]:
        return Placement(await nodes.live(clock()), big_threshold=0).route(
            room, big=False).urls
    return locate


def websocket_links(locate: Locate, jwt_secret: str,
                    words: BusWords | None = None) -> LinkFactory:
    def make(character: Character, on_frame: FrameHandler) -> RoomLink:
        return WebSocketLink(locate, *agent_credentials(character, jwt_secret), on_frame,
                             words)
    return make
