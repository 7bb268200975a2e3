"""Test harness: a real 3-node NATS cluster on ephemeral loopback ports.

Each node is a ``nats-server`` child process (Debian package ``nats-server``,
installed by ``.ci/system-deps.sh``) with a client port, a cluster (route)
port and a monitoring port, all picked free at start and kept for the
node's life, so that a killed node restarts where the clients expect it.
``start()`` returns when every node has routes to the two others.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.support import end_process, free_port

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NatsNode:
    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.port = free_port()
        self.cluster_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def route_url(self) -> str:
        return f"nats://127.0.0.1:{self.cluster_port}"

    def start(self, routes: list[str]) -> None:
        log = self.workdir / f"{self.name}.log"
        cmd = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-n", self.name,
               "-m", str(self.http_port), "--cluster_name", "liveroom-test",
               "--cluster", self.route_url, "--routes", ",".join(routes), "-l", str(log)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def routes(self) -> int:
        """How many routes the node has (-1 while it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/routez",
                                        timeout=0.5) as r:
                body: dict[str, Any] = json.load(r)
            return int(body.get("num_routes", 0))
        except OSError:
            return -1

    def subscriptions(self) -> list[str]:
        """Every subject the server's client connections subscribe to
        (``/connz?subs=1``), one entry per subscription."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/connz?subs=1",
                                    timeout=2) as r:
            body: dict[str, Any] = json.load(r)
        return [s for c in body.get("connections", []) for s in c.get("subscriptions_list", [])]

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        proc, self.proc = self.proc, None
        end_process(proc, kill=True)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        end_process(proc)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class NatsCluster:
    def __init__(self, workdir: Path, size: int = 3) -> None:
        if not Path(NATS_SERVER).exists():
            raise RuntimeError("nats-server is not installed: run .ci/system-deps.sh "
                               "(Debian package nats-server)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.nodes = [NatsNode(f"n{i}", workdir) for i in range(size)]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def _routes_of(self, node: NatsNode) -> list[str]:
        return [n.route_url for n in self.nodes if n is not node]

    def start(self, timeout: float = 15.0) -> NatsCluster:
        for node in self.nodes:
            node.start(self._routes_of(node))
        self.wait_routes(timeout)
        return self

    def wait_routes(self, timeout: float = 15.0) -> None:
        """Until every live node has a route to every other live node."""
        deadline = time.monotonic() + timeout
        while True:
            live = [n for n in self.nodes if n.alive]
            if all(n.routes() >= len(live) - 1 for n in live):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("NATS cluster did not form: " + ", ".join(
                    f"{n.name}={n.routes()}" for n in live))
            time.sleep(0.05)

    def kill(self, index: int) -> NatsNode:
        node = self.nodes[index]
        node.kill()
        return node

    def restart(self, index: int, timeout: float = 15.0) -> None:
        node = self.nodes[index]
        node.kill()
        node.start(self._routes_of(node))
        self.wait_routes(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class JetStreamServer:
    """One ``nats-server`` with JetStream on (``-js``, file store in
    ``workdir``): the stream of the events to the backend. Keeps its port and
    store across ``kill``/``start``, as a restarted server would."""

    def __init__(self, workdir: Path) -> None:
        if not Path(NATS_SERVER).exists():
            raise RuntimeError("nats-server is not installed: run .ci/system-deps.sh")
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> JetStreamServer:
        cmd = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.http_port),
               "-js", "-sd", str(self.workdir / "store"), "-l", str(self.workdir / "js.log")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/jsz",
                                            timeout=0.5) as r:
                    if json.load(r).get("config") is not None:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("nats-server with JetStream did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        end_process(proc)

    def __enter__(self) -> JetStreamServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
