"""``liveroom agents``: the characters as a process of their own.

They connect to an edge over the protocol's WebSocket (``--edge-url``) as
users with role ``agent``, with tokens this process mints from the shared
JWT secret, and serve the interaction API on ``--host``/``--port``. Over
the wire their words are ordinary ``action`` frames, so the edge's per-user
action rate applies to them: deltas are coalesced to one every
``--agent-delta-interval`` seconds (0.3 by default here), well inside the
default 5 a second.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import generate_latest

from edge.auth import Identity, verify_token
from edge.client import ClosedError, LiveroomClient
from edge.protocol import MSGPACK, Forbidden
from edge.session import may_write_section
from llm_agents.character import Character
from llm_agents.link import FrameHandler, RoomLink
from llm_agents.serve import (
    AgentsService,
    LinkFactory,
    add_agent_arguments,
    agent_credentials,
    agent_options,
)

log = logging.getLogger("liveroom.agents")


class WebSocketLink:
    """An agent's connection to a remote edge. Versions of the sections it
    sees are tracked from ``joined``/``state`` frames, so its compare-and-set
    writes name the version it last saw; a ``version_conflict`` error brings
    the current one."""

    def __init__(self, url: str, identity: Identity, token: str,
                 on_frame: FrameHandler) -> None:
        self.url = url
        self.identity = identity
        self._token = token
        self._on_frame = on_frame
        self._client: LiveroomClient | None = None
        self._reader: asyncio.Task[None] | None = None
        self._partials: dict[tuple[str, str], int] = {}
        self.closed = asyncio.Event()

    async def join(self, room: str) -> None:
        if self._client is None:
            self._client = await LiveroomClient.connect(self.url, self._token, codec=MSGPACK)
        joined = await self._client.join(room)
        if joined.get("type") != "joined":
            raise ClosedError(None, f"join refused: {joined}")
        self._track(joined)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())

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

    async def _read(self) -> None:
        assert self._client is not None
        try:
            while True:
                frame = await self._client.recv(timeout=3600)
                self._track(frame)
                self._on_frame(frame)
        except (ClosedError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("agent %s: connection to the edge ended: %s", self.identity.user, exc)
        finally:
            self.closed.set()

    def publish(self, room: str, kind: str, body: Any) -> None:
        if self._client is not None and not self._client.ws.closed:
            task = asyncio.ensure_future(self._client.action(room, kind, body))
            task.add_done_callback(lambda t: t.exception())

    async def write_state(self, room: str, section: str, value: Any,
                          expected: int | None) -> tuple[int, int]:
        if not may_write_section(self.identity, section):
            raise Forbidden(f"agent {self.identity.user!r} may not write {section!r}")
        assert self._client is not None
        frame: dict[str, Any] = {"type": "state", "room": room, "section": section,
                                 "value": value}
        if expected is not None:
            frame["expect"] = expected
        await self._client.send(frame)
        # No direct reply: the broadcast state frame (or a conflict) updates
        # what section_partial answers next time.
        return (expected or 0) + 1, 0

    async def section_partial(self, room: str, section: str) -> int:
        return self._partials.get((room, section), 0)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._client is not None:
            await self._client.close()


def websocket_links(url: str, jwt_secret: str) -> LinkFactory:
    def make(character: Character, on_frame: FrameHandler) -> RoomLink:
        return WebSocketLink(url, *agent_credentials(character, jwt_secret), on_frame)
    return make


def add_agents_parser(sub: Any) -> None:
    p = sub.add_parser("agents", help="run the LLM characters as their own process, "
                       "connected to an edge over WebSocket")
    p.add_argument("--edge-url", default=os.environ.get("LIVEROOM_EDGE_URL",
                                                        "ws://127.0.0.1:8080/ws"))
    p.add_argument("--host", default=os.environ.get("LIVEROOM_AGENTS_HOST", "127.0.0.1"),
                   help="where the interaction API listens")
    p.add_argument("--port", type=int, default=int(os.environ.get("LIVEROOM_AGENTS_PORT",
                                                                  "8090")))
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("LIVEROOM_DATA_DIR", "data")))
    p.add_argument("--agent-delta-interval", type=float, default=0.3)
    p.add_argument("--log-level", default=os.environ.get("LIVEROOM_LOG_LEVEL", "INFO"))
    add_agent_arguments(p)


async def _run(args: argparse.Namespace, secret: str) -> int:
    opts = agent_options(args)
    opts.delta_interval = args.agent_delta_interval
    service = AgentsService(opts, args.data_dir, websocket_links(args.edge_url, secret),
                            lambda token, now: verify_token(token, secret, now))
    app = web.Application()
    service.add_routes(app)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(service.registry),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = int(runner.addresses[0][1]) if runner.addresses else args.port
    await service.start()
    log.info("agents listening on http://%s:%d (edge %s)", args.host, port, args.edge_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # A link that loses the edge ends the process (its supervisor restarts it).
    lost = [asyncio.create_task(a.link.closed.wait())  # type: ignore[attr-defined]
            for a in service.runtime.agents.values()]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *lost], return_when=asyncio.FIRST_COMPLETED)
    for t in [stopper, *lost]:
        t.cancel()
    await service.stop()
    await runner.cleanup()
    return 0 if stopper in done else 1


def run_agents(args: argparse.Namespace) -> int:
    secret = os.environ.get("LIVEROOM_JWT_SECRET")
    if not secret:
        raise SystemExit("liveroom agents needs LIVEROOM_JWT_SECRET (the edge's secret)")
    return asyncio.run(_run(args, secret))
