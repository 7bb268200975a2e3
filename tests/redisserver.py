"""Test support: real Redis servers on free loopback ports.

``RedisServer`` is one standalone ``redis-server`` with persistence off
(``--save '' --appendonly no``), so ``restart()`` (same port, so clients'
URLs stay valid) brings it back EMPTY: that is the "Redis lost its data"
fault the stores and registries must survive.

``RedisClusterServers`` is a Redis Cluster of three masters (no replicas),
joined with ``redis-cli --cluster create``; it waits until every node says
``cluster_state:ok``. Each node keeps its ``nodes.conf`` in its own
directory, so ``restart(i)`` brings node ``i`` back with its slots and
without its keys (persistence is off there too).

A cluster node also listens on its port + 10000 (the cluster bus), so ports
are picked where both are free.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from tests.support import end_process
from wire.errors import Unavailable

T = TypeVar("T")

_PORT_RANGE = (20000, 30000)  # + 10000 for the cluster bus stays under 65536


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*, bus: bool = False) -> int:
    """A free loopback port (and port + 10000 too, with ``bus``)."""
    for _ in range(500):
        port = random.randint(*_PORT_RANGE)
        if _is_free(port) and (not bus or _is_free(port + 10000)):
            return port
    raise RuntimeError("no free port pair found")


def _cli(port: int, *args: str, timeout: float = 10.0) -> str:
    done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                          capture_output=True, text=True, timeout=timeout)
    return done.stdout + done.stderr


def _wait(what: str, check: object, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if callable(check) and check():
            return
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} not ready after {timeout}s\n{tail}")
        time.sleep(0.02)


class RedisServer:
    """One ``redis-server``; ``url`` is ``redis://127.0.0.1:<port>/0``."""

    def __init__(self, *, port: int = 0, directory: Path | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.port = port
        self.extra = extra
        self._own_dir = directory is None
        self.dir = directory or Path(tempfile.mkdtemp(prefix="liveroom-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def start(self, timeout: float = 10.0, *, keep_port: bool = False) -> RedisServer:
        if self.proc is not None:
            return self
        for attempt in range(3):
            if not self.port or (attempt and not keep_port):
                self.port = free_port(bus="--cluster-enabled" in self.extra)
            cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                   "--logfile", str(self.log_path), "--protected-mode", "no", *self.extra]
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                _wait(f"redis-server on {self.port}", self._pings, timeout, self.log_path)
                return self
            except RuntimeError:
                self.stop()
                if attempt == 2:
                    raise
        return self

    def _pings(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited:\n{self.log()}")
        return "PONG" in _cli(self.port, "ping", timeout=2)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (``kill``: SIGKILL, a crash). Nothing is saved."""
        proc, self.proc = self.proc, None
        end_process(proc, kill=kill)

    def restart(self, *, kill: bool = True) -> None:
        """Stop and start again on the same port: an empty Redis."""
        self.stop(kill=kill)
        # redis-server binds with SO_REUSEADDR, so the old connections'
        # TIME_WAIT does not keep it off its port.
        self.start(keep_port=True)

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class RedisClusterServers:
    """A three-master Redis Cluster; ``url`` is ``redis+cluster://`` to the
    first node (redis-py discovers the others)."""

    def __init__(self, masters: int = 3) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="liveroom-rcluster-"))
        self.nodes: list[RedisServer] = []
        for i in range(masters):
            d = self.root / f"n{i}"
            d.mkdir()
            self.nodes.append(RedisServer(directory=d, extra=(
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000",
                # A restarted empty master serves its slots again at once.
                "--cluster-require-full-coverage", "yes")))

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def start(self, timeout: float = 30.0) -> RedisClusterServers:
        for n in self.nodes:
            n.start()
        out = _cli(self.nodes[0].port, "--cluster", "create",
                   *(f"127.0.0.1:{p}" for p in self.ports),
                   "--cluster-replicas", "0", "--cluster-yes", timeout=60)
        if "[OK] All 16384 slots covered" not in out:
            self.close()
            raise RuntimeError(f"redis-cli --cluster create failed:\n{out}")
        self.wait_ok(timeout)
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node says ``cluster_state:ok`` and knows all masters."""
        def ok() -> bool:
            for n in self.nodes:
                info = _cli(n.port, "cluster", "info", timeout=2)
                if "cluster_state:ok" not in info or \
                        f"cluster_known_nodes:{len(self.nodes)}" not in info:
                    return False
            return True
        _wait("redis cluster", ok, timeout, self.nodes[0].log_path)

    def restart(self, i: int, *, kill: bool = True) -> None:
        """Restart node ``i``: it comes back with its slots, without its keys."""
        self.nodes[i].restart(kill=kill)
        self.wait_ok()

    def close(self) -> None:
        for n in self.nodes:
            n.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll ``check`` until it holds, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(0.02)


async def when_up(op: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    """``op()``, retried while Redis is still coming back (``Unavailable``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await op()
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
