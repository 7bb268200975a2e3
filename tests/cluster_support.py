"""Test support for the distributed roles: ``liveroom edge|router|cdn`` child
processes on ephemeral loopback ports, and a client that reconnects the way
docs/PROTOCOL.md tells a client to (route, hello with the inbox cursor,
join with versions and epoch); and the SDK clusters of tests/e2e (a router
and two edges on NATS, Redis and PostgreSQL, a room owned by edge 1)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from edge.client import ClosedError, LiveroomClient
from room_router.placement import owner
from tests.natsserver import NatsCluster
from tests.pgserver import PgServer
from tests.redisserver import RedisServer
from tests.support import API_KEY, JWT_SECRET, LoggedProcess, token, until

_LISTENING = re.compile(r"listening on (http://[\d.]+:\d+) \((\{.*\})\)")


class RoleServer:
    """One ``liveroom <role>`` process; ``start()`` returns once it listens."""

    def __init__(self, role: str, data_dir: Path, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.role = role
        self.data_dir = data_dir
        self.args = list(args)
        self.extra_env = env or {}
        self.child = LoggedProcess(role, self._on_line)
        self.url = ""
        self.public_url = ""
        self.info: dict[str, Any] = {}

    def start(self, timeout: float = 20.0) -> RoleServer:
        env = {**os.environ, "LIVEROOM_JWT_SECRET": JWT_SECRET, "LIVEROOM_API_KEY": API_KEY,
               "PYTHONUNBUFFERED": "1", **self.extra_env}
        cmd = [sys.executable, "-m", "liveroom.cli", self.role, "--host", "127.0.0.1",
               "--port", "0", "--data-dir", str(self.data_dir), *self.args]
        self.child.start(cmd, env, timeout)
        return self

    def _on_line(self, line: str) -> bool:
        m = _LISTENING.search(line)
        if m:
            self.url = m.group(1)
            self.info = json.loads(m.group(2))
            # The agents role serves no WebSocket: no public_url.
            self.public_url = self.info.get("public_url", self.url)
        return m is not None

    def stop(self, timeout: float = 10.0) -> None:
        self.child.stop(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.child.kill()

    def logs(self) -> str:
        return self.child.logs()


async def route(http: aiohttp.ClientSession, base: str, room: str,
                client: str | None = None) -> dict[str, Any]:
    params = {"room": room}
    if client:
        params["client"] = client
    async with http.get(f"{base}/v1/route", params=params) as r:
        body: dict[str, Any] = await r.json()
        if r.status != 200:
            raise RuntimeError(f"route {room}: {r.status} {body}")
        return body


class ResumingClient:
    """A user in one room that keeps its versions, epoch and inbox cursor,
    and reconnects through the router when its edge goes away."""

    def __init__(self, http: aiohttp.ClientSession, router: str, user: str, room: str) -> None:
        self.http = http
        self.router = router
        self.user = user
        self.room = room
        self.client: LiveroomClient | None = None
        self.versions: dict[str, int] = {}
        self.epoch: str | None = None
        self.state: dict[str, Any] = {}
        self.cursor = 0
        self.peers: list[dict[str, Any]] = []
        self.last_join: dict[str, Any] = {}
        self.last_inbox: dict[str, Any] = {}
        self.url = ""
        self.closed = False

    async def connect(self, attempts: int = 40) -> dict[str, Any]:
        """Route, connect, hello (with the cursor), join (with versions);
        follows redirects; retries while the router still lists a dead edge."""
        last: Exception | None = None
        for _ in range(attempts):
            try:
                answer = await route(self.http, self.router, self.room, self.user)
                url = answer["url"]
                for _hop in range(4):
                    c = await LiveroomClient.connect(url, token(self.user),
                                                     session=self.http,
                                                     inbox_cursor=self.cursor)
                    got = await c.join(self.room, known=self.versions or None,
                                       epoch=self.epoch)
                    if got["type"] == "redirect":
                        await c.close()
                        url = got["url"]
                        continue
                    self.client, self.url, self.closed = c, url, False
                    self._absorb(got)
                    self.last_join = got
                    return got
            except (OSError, aiohttp.ClientError, ClosedError, TimeoutError,
                    RuntimeError) as exc:
                last = exc
            await asyncio.sleep(0.25)
        raise RuntimeError(f"{self.user} could not reconnect: {last}")

    def _absorb(self, frame: dict[str, Any]) -> None:
        self.epoch = frame.get("epoch", self.epoch)
        if "versions" in frame:
            for s in frame.get("sections", []):
                self.state[s["section"]] = s["value"]
            self.versions = dict(frame["versions"])

    async def pump(self, timeout: float) -> list[dict[str, Any]]:
        """Read frames for ``timeout`` seconds (or until the socket drops);
        keeps state, versions and peer messages up to date."""
        assert self.client is not None
        frames: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return frames
            try:
                f = await self.client.recv(left)
            except TimeoutError:
                return frames
            except ClosedError:
                self.closed = True
                return frames
            frames.append(f)
            kind = f.get("type")
            if kind == "state" and f.get("room") == self.room:
                self.state[f["section"]] = f["value"]
                self.versions[f["section"]] = f["partial"]
            elif kind == "peer":
                self.peers.append(f)
                self.cursor = max(self.cursor, f["seq"])
            elif kind == "inbox":
                self.last_inbox = f

    async def close(self) -> None:
        if self.client is not None and not self.client.ws.closed:
            await self.client.close()


# The SDK clusters (tests/e2e/test_sdk_*_cluster.py): fast heartbeats, and
# rates high enough for a test that writes state and sends peers all along.
ROLE_ARGS = ("--heartbeat", "0.5", "--big-threshold", "1000")
EDGE_ARGS = ("--action-rate", "500", "--action-burst", "500", "--peer-rate", "200",
             "--peer-burst", "200", "--online-interval", "0.2")


@dataclass
class SdkCluster:
    """A router and edges ``edge-0`` (group g0) and ``edge-1`` (g1); ``room``
    is owned by g1, so killing ``edges[1]`` moves it to edge 0 and starting
    it again moves it back."""

    http: aiohttp.ClientSession
    router: RoleServer
    edges: list[RoleServer]
    room: str

    def through_router(self, user: str) -> Callable[[], Awaitable[str]]:
        """The SDK's ``url`` callable: ask the router where the room is."""
        async def url() -> str:
            return str((await route(self.http, self.router.url, self.room, user))["url"])
        return url

    async def write(self, section: str, value: Any) -> None:
        """Write a section over the HTTP API of edge 0 (the one never killed)."""
        async with self.http.post(f"{self.edges[0].url}/v1/rooms/{self.room}/state/{section}",
                                  json={"value": value},
                                  headers={"Authorization": f"Bearer {API_KEY}"}) as r:
            assert r.status == 200, await r.text()

    async def head(self) -> dict[str, Any]:
        """The room's head (versions, epoch, total) as the server has it."""
        async with self.http.get(f"{self.edges[0].url}/v1/rooms/{self.room}/state") as r:
            body: dict[str, Any] = await r.json()
            return body


@contextlib.asynccontextmanager
async def sdk_cluster(nats: NatsCluster, pg: PgServer, tmp_path: Path,
                      http: aiohttp.ClientSession, name: str) -> AsyncIterator[SdkCluster]:
    """Start the cluster (a Redis and a PostgreSQL database of its own,
    ``name`` the database's prefix); stopped at the end."""
    redis = RedisServer().start()
    dsn = await pg.create_database(name)
    services = ["--nats", ",".join(nats.urls), "--redis", redis.url, "--postgres", dsn,
                "--subject-prefix", f"{name}{time.monotonic_ns()}"]
    router = RoleServer("router", tmp_path / "router", "--node-id", "router-0", *ROLE_ARGS,
                        *services)
    edges = [RoleServer("edge", tmp_path / f"edge-{i}", "--node-id", f"edge-{i}",
                        "--group", f"g{i}", *ROLE_ARGS, *EDGE_ARGS, *services)
             for i in range(2)]
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in [router, *edges]))

        async def groups() -> bool:
            async with http.get(f"{router.url}/v1/cluster") as r:
                return len((await r.json())["groups"]) == 2

        await until(groups, 10, "the router sees 2 groups")
        room = next(r for r in (f"{name}-{i}" for i in range(100))
                    if owner(r, ["g0", "g1"]) == "g1")
        yield SdkCluster(http, router, edges, room)
    finally:
        for proc in [*edges, router]:
            proc.stop()
        redis.close()
