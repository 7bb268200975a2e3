"""Test support: a real ``liveroom serve`` process on an ephemeral loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgpack

from edge.auth import mint_token, role_everywhere

JWT_SECRET = "integration-test-secret-0123456789abcdef"
API_KEY = "integration-test-api-key"
_LISTENING = re.compile(r"listening on http://([\d.]+):(\d+)")
# Logged before _LISTENING when QUIC is on.
_QUIC = re.compile(r"quic listening on udp://([\d.]+):(\d+)/wt \(certificate sha256 ([0-9a-f]+)")
REPO = Path(__file__).resolve().parent.parent


def end_process(proc: subprocess.Popen[Any] | None, *, kill: bool = False,
                timeout: float = 10.0) -> int | None:
    """Stop ``proc`` if it runs: SIGTERM (``kill``: SIGKILL, as a crash
    would), then SIGKILL if it has not exited within ``timeout`` seconds.
    Its exit status (None without a process)."""
    if proc is None:
        return None
    if proc.poll() is None:
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


class LoggedProcess:
    """A server in a child process whose stderr is read line by line and
    kept (``log``); ``is_ready(line)`` says which line means it is up."""

    def __init__(self, what: str, is_ready: Callable[[str], bool]) -> None:
        self.what = what
        self._is_ready = is_ready
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._ready = threading.Event()
        self._up = False

    def start(self, cmd: list[str], env: dict[str, str], timeout: float) -> None:
        """Start ``cmd`` and return once it is ready (else stop it, RuntimeError)."""
        self._ready.clear()
        self._up = False
        self.log = []
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
        # Set by the ready line, or by the end of stderr (the process exited
        # first: a usage error is known at once, not after ``timeout``).
        if not self._ready.wait(timeout) or not self._up:
            self.stop()
            raise RuntimeError(f"{self.what} did not start:\n" + "".join(self.log))

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log.append(line)
            if self._is_ready(line):
                self._up = True
                self._ready.set()
        self._ready.set()  # stderr ended: the process is gone

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit status."""
        proc, self.proc = self.proc, None
        return end_process(proc, timeout=timeout)

    def kill(self) -> None:
        """Stop abruptly, as a crash would."""
        proc, self.proc = self.proc, None
        end_process(proc, kill=True)

    def logs(self) -> str:
        return "".join(self.log)


class LiveServer:
    """``liveroom serve`` in a child process. ``start()`` returns once the
    server logs the port it bound; its log is kept in ``self.child.log``."""

    def __init__(self, data_dir: Path, *args: str, dev: bool = True,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.dev = dev
        self.extra_env = env or {}
        self.child = LoggedProcess("server", self._on_line)
        self.port = 0
        self.quic_port = 0  # 0: QUIC is off
        self.cert_sha256 = ""

    @property
    def proc(self) -> subprocess.Popen[str] | None:
        return self.child.proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def wt_url(self) -> str:
        """The WebTransport URL (``--dev`` servers start QUIC on a free port)."""
        assert self.quic_port, "QUIC is off on this server"
        return f"https://127.0.0.1:{self.quic_port}/wt"

    def start(self, timeout: float = 15.0) -> LiveServer:
        env = {**os.environ, "LIVEROOM_JWT_SECRET": JWT_SECRET, "LIVEROOM_API_KEY": API_KEY,
               "PYTHONUNBUFFERED": "1",
               # Deterministic characters unless a test picks a model backend.
               "LIVEROOM_AGENT_BACKEND": "scripted", **self.extra_env}
        cmd = [sys.executable, "-m", "liveroom.cli", "serve", "--host", "127.0.0.1",
               "--port", "0", "--data-dir", str(self.data_dir), *self.args]
        if self.dev:
            cmd.append("--dev")
        self.child.start(cmd, env, timeout)
        return self

    def _on_line(self, line: str) -> bool:
        q = _QUIC.search(line)
        if q:
            self.quic_port, self.cert_sha256 = int(q.group(2)), q.group(3)
        m = _LISTENING.search(line)
        if m:
            self.port = int(m.group(2))
        return m is not None

    def stop(self, timeout: float = 10.0) -> int | None:
        return self.child.stop(timeout)

    def kill(self) -> None:
        """Stop abruptly, as a crash would."""
        self.child.kill()

    def token(self, user: str, role: str = "viewer", name: str | None = None,
              ttl: float = 3600.0, rooms: dict[str, str] | None = None) -> str:
        return token(user, role, ttl, rooms, name)

    def logs(self) -> str:
        return self.child.logs()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


async def metric(session: Any, url: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample from ``url``/metrics (0 if absent)."""
    async with session.get(f"{url}/metrics") as r:
        text = await r.text()
    want = name
    if labels:
        want += "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def next_reply(client: Any, name: str, timeout: float = 10.0
                     ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ``agent.delta`` frames and the ``agent.say`` of the next reply of
    the character ``name`` that ``client`` (an ``edge.client.LiveroomClient``)
    sees; every other frame is skipped."""
    deltas: list[dict[str, Any]] = []
    while True:
        frame = await client.expect("action", timeout=timeout)
        if frame["from"]["id"] != name:
            continue
        if frame["kind"] == "agent.delta":
            deltas.append(frame)
        elif frame["kind"] == "agent.say":
            return deltas, frame


def free_port() -> int:
    """A loopback TCP port free right now (the kernel's pick for port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token(user: str, role: str = "viewer", ttl: float = 3600.0,
          rooms: dict[str, str] | None = None, name: str | None = None) -> str:
    """A token for ``user`` signed with the tests' JWT secret. ``role`` host
    or moderator without ``rooms`` is that role in every room (``*``); with
    ``rooms``, ``role`` is the global role and ``rooms`` the grants."""
    if rooms is None:
        role, rooms = role_everywhere(role)
    return mint_token(JWT_SECRET, user, name or user, role, time.time(), ttl, rooms)


async def until(cond: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``cond()`` (sync or async) until truthy; bounded by ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def in_process_edge(data_dir: Path, config: Any, **options: Any) -> AsyncIterator[int]:
    """``liveroom serve``'s app with ``config`` (an ``EdgeConfig``) behind the
    edge's own front door (``EdgeSite``) in this process, on an ephemeral
    port (yielded): for tests that reach into timers and framing."""
    from aiohttp import web

    from edge.ws_conn import EdgeSite
    from liveroom.app import make_app
    from liveroom.options import ServeOptions
    from llm_agents.service import AgentOptions

    opts = ServeOptions(port=0, data_dir=data_dir, jwt_secret=JWT_SECRET, api_key=API_KEY,
                        demo_room=False, config=config, agents=AgentOptions(enabled=False),
                        quic_port="off", **options)
    runner = web.AppRunner(make_app(opts), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = EdgeSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site.port
    finally:
        await runner.cleanup()


def pack(obj: Any) -> bytes:
    """msgpack, as a client sends it."""
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def nested(depth: int, leaf: Any = 1) -> Any:
    """``leaf`` inside ``depth`` one-element lists."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value
