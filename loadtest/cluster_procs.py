"""The cluster ``loadtest.bench_cluster`` measures, as child processes on
loopback ports: one ``nats-server`` (the bus), one ``redis-server`` (state
store, node registry, online counts; persistence off), one ``liveroom
router`` and N ``liveroom edge`` processes (groups ``g0`` .. ``gN-1``, the
benchmark's limits lifted as for ``liveroom serve`` in ``loadtest.servers``),
each pinned to the CPUs the benchmark's layout gives it. No PostgreSQL: the
edges fall back to a local SQLite peer inbox, which a room of viewers and
one publisher never touches.

Also here: flagging the room big (state section ``placement`` =
``{"spread": true}``, so every group serves it and the router spreads its
clients) and asking the router where each viewer goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.procstat import free_port, terminate
from loadtest.servers import ServerProcess
from loadtest.wsclient import ROOM

API_KEY = "bench-api-key"
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
# Route look-ups in flight from the parent while it places the viewers.
ROUTE_CONCURRENCY = 32


def _pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _wait(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str,
          timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready within {timeout:.0f} s")
        time.sleep(0.05)


def _answers(port: int, send: bytes, expect: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(send)
            return expect in s.recv(4096)
    except OSError:
        return False


@dataclass
class BenchCluster:
    """The running processes; ``pids()`` names each for the CPU readings."""

    edge_cpus: list[set[int]]
    infra_cpus: set[int] | None
    data_dir: Path
    secret: str
    nats: subprocess.Popen[bytes] | None = None
    redis: subprocess.Popen[bytes] | None = None
    router: ServerProcess | None = None
    edges: list[ServerProcess] = field(default_factory=list)
    nats_url: str = ""
    redis_url: str = ""

    def start(self, args: argparse.Namespace, timeout: float = 60.0) -> BenchCluster:
        for name in (NATS_SERVER, REDIS_SERVER):
            if not Path(name).exists():
                raise RuntimeError(f"{name} is not installed: run .ci/system-deps.sh")
        try:
            self._start(args, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, args: argparse.Namespace, timeout: float) -> None:
        port = free_port()
        self.nats = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=_pinned(self.infra_cpus))
        self.nats_url = f"nats://127.0.0.1:{port}"
        _wait(lambda: _answers(port, b"PING\r\n", b"INFO"), self.nats, "nats-server")
        rport = free_port()
        self.redis = subprocess.Popen(
            [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(rport), "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_pinned(self.infra_cpus))
        self.redis_url = f"redis://127.0.0.1:{rport}/0"
        _wait(lambda: _answers(rport, b"PING\r\n", b"+PONG"), self.redis, "redis-server")

        env = {**os.environ, "LIVEROOM_JWT_SECRET": self.secret, "LIVEROOM_API_KEY": API_KEY,
               "PYTHONUNBUFFERED": "1"}
        common = ["--host", "127.0.0.1", "--port", "0", "--nats", self.nats_url,
                  "--redis", self.redis_url, "--heartbeat", str(args.heartbeat)]
        self.router = ServerProcess(
            [sys.executable, "-m", "liveroom.cli", "router", *common, "--node-id", "router-0",
             "--data-dir", str(self.data_dir / "router")], env, self.infra_cpus)
        for i, cpus in enumerate(self.edge_cpus):
            self.edges.append(ServerProcess(
                [sys.executable, "-m", "liveroom.cli", "edge", *common, "--node-id", f"edge-{i}",
                 "--group", f"g{i}", "--data-dir", str(self.data_dir / f"edge-{i}"),
                 "--coalesce-window", str(args.coalesce_window),
                 "--action-rate", "1e9", "--action-burst", "1000000000",
                 "--frame-rate", "1e9", "--frame-burst", "1000000000",
                 "--outbound-budget", str(args.outbound_budget)], env, cpus))
        # Side by side: each process spends most of its start importing.
        errors: list[BaseException] = []

        def start(p: ServerProcess) -> None:
            try:
                p.start(timeout)
            except BaseException as exc:  # reported below, after every thread ended
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(p,)) for p in [self.router, *self.edges]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        want = {f"g{i}" for i in range(len(self.edges))}
        for p in [self.router, *self.edges]:
            self._wait_groups(p, want, timeout)

    @staticmethod
    def _wait_groups(p: ServerProcess, want: set[str], timeout: float) -> None:
        """Until ``p``'s cluster view (``GET /v1/cluster``) has every group."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{p.port}/v1/cluster",
                                            timeout=2) as r:
                    if want <= set(json.load(r).get("groups", [])):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {p.port} did not see groups {sorted(want)}")
            time.sleep(0.1)

    def flag_spread(self) -> None:
        """Mark the room big (section ``placement``), through edge 0's API."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.edges[0].port}/v1/rooms/{ROOM}/state/placement",
            data=json.dumps({"value": {"spread": True}}).encode(), method="POST",
            headers={"Authorization": f"Bearer {API_KEY}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            if r.status != 200:
                raise RuntimeError(f"flagging the room spread: HTTP {r.status}")

    def route_viewers(self, viewers: int) -> list[list[int]]:
        """Ask the router where each viewer goes (client key = its user id,
        ``v<i>``): the viewer indices of each edge, in edge order."""
        assert self.router is not None
        by_url = {f"ws://127.0.0.1:{e.port}/ws": i for i, e in enumerate(self.edges)}
        answers = asyncio.run(_routes(self.router.port, viewers))
        out: list[list[int]] = [[] for _ in self.edges]
        for i, answer in enumerate(answers):
            if not answer.get("spread"):
                raise RuntimeError(f"the router does not spread room {ROOM!r}: {answer}")
            if answer["url"] not in by_url:
                raise RuntimeError(f"the router sent v{i} to an unknown edge: {answer}")
            out[by_url[answer["url"]]].append(i)
        return out

    def pids(self) -> dict[str, int]:
        named = {f"edge-{i}": e.pid for i, e in enumerate(self.edges)}
        if self.nats is not None:
            named["nats-server"] = self.nats.pid
        if self.redis is not None:
            named["redis-server"] = self.redis.pid
        if self.router is not None:
            named["router"] = self.router.pid
        return named

    def exited(self) -> list[str]:
        """Which of the processes have ended (a crash during a run)."""
        gone = [f"edge-{i}" for i, e in enumerate(self.edges) if e.exited() is not None]
        for name, proc in (("nats-server", self.nats), ("redis-server", self.redis)):
            if proc is not None and proc.poll() is not None:
                gone.append(name)
        return gone

    def stop(self) -> None:
        for p in [*self.edges, *([self.router] if self.router else [])]:
            p.stop()
        self.edges, self.router = [], None
        for proc in (self.redis, self.nats):
            if proc is not None:
                terminate(proc, grace=10.0)
        self.redis = self.nats = None


async def _routes(port: int, viewers: int) -> list[dict[str, Any]]:
    sem = asyncio.Semaphore(ROUTE_CONCURRENCY)
    base = f"http://127.0.0.1:{port}/v1/route"
    async with aiohttp.ClientSession() as http:
        async def one(i: int) -> dict[str, Any]:
            async with sem, http.get(base, params={"room": ROOM, "client": f"v{i}"}) as r:
                body: dict[str, Any] = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"route v{i}: HTTP {r.status} {body}")
                return body
        return list(await asyncio.gather(*(one(i) for i in range(viewers))))
