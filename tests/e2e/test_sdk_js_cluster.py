"""The JavaScript SDK (clients/js) in the distributed deployment: the cluster
of test_sdk_python_cluster.py (a router and two ``liveroom edge`` processes
on a real NATS cluster, Redis and PostgreSQL) with the clients in Node,
driven by clients/js/test/cluster-scenario.mjs. A host (writing state all
along) and a viewer are in a room through the router and a sender keeps
sending the viewer peer messages; the edge that owns the room is SIGKILLed,
then started again (the clients follow the ``moved`` redirect back). Both end
with the server's final versions and the viewer with every peer message
exactly once. Needs Node 18+ and ``clients/js/node_modules`` (``make js``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.cluster_support import RoleServer, sdk_cluster
from tests.natsserver import NatsCluster
from tests.pgserver import PgServer
from tests.support import REPO, token, until

pytestmark = pytest.mark.e2e

JS = REPO / "clients" / "js"
SCENARIO = JS / "test" / "cluster-scenario.mjs"
IN_ROOM = ("host", "viewer")
# The node script's own bound on the whole run (seconds).
MAX_SECONDS = 150


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "ws").is_dir():
        missing = "node (Node.js 18+)" if node is None else f"{JS / 'node_modules'}"
        pytest.fail(f"{missing} is missing: run `make js` (it installs Node.js and runs "
                    "npm ci in clients/js) before this test", pytrace=False)
    return node


class Scenario:
    """The node process: commands on its stdin, JSON lines on its stdout
    (read by a task: where each client is, the peer count, the result)."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.ready = False
        self.where: dict[str, str] = {}
        self.peers = 0
        self.written = 0
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line: dict[str, Any] = json.loads(raw)
            if "connected" in line:
                self.where[line["connected"]] = line["url"]
            self.ready = self.ready or line.get("ready", False)
            self.peers = line.get("peers", self.peers)
            self.written = line.get("written", self.written)
            self.result = line.get("result", self.result)
            self.error = line.get("error", self.error)

    def alive(self) -> bool:
        """False once the script failed (its error, with its log, raised)."""
        if self.error is not None or (self.proc.returncode and self.result is None):
            raise AssertionError(f"the node scenario failed: {self.error}\n"
                                 f"{self.log.read_text()}")
        return True

    async def wait(self, cond: Any, timeout: float, what: str) -> None:
        await until(lambda: self.alive() and cond(), timeout, what)

    def on(self, edge: RoleServer) -> bool:
        """Every client in the room is connected to ``edge``."""
        want = urlsplit(edge.public_url).netloc
        return all(urlsplit(self.where.get(w, "")).netloc == want for w in IN_ROOM)

    async def more(self, n: int, what: str) -> None:
        """Wait for ``n`` more peer messages handed to the viewer and state
        writes sent by the host."""
        peers, written = self.peers, self.written
        await self.wait(lambda: self.peers >= peers + n and self.written >= written + n, 20,
                        f"{n} more peer messages and state writes {what}")

    async def stop(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stop\n")
        await self.proc.stdin.drain()
        await self.wait(lambda: self.result is not None, 60, "the scenario's result")
        assert self.result is not None
        return self.result


@contextlib.asynccontextmanager
async def scenario(config: dict[str, Any], log: Path) -> AsyncIterator[Scenario]:
    node = _node()
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            node, str(SCENARIO), cwd=JS, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=err, limit=1 << 20)  # the result line
    run = Scenario(proc, log)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(config).encode() + b"\n")
    try:
        yield run
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 10)
        await asyncio.wait_for(run._reader, 10)


async def test_js_sdk_edge_sigkilled_and_restarted_clients_converge_peers_exactly_once(
        nats_cluster: NatsCluster, pg: PgServer, tmp_path: Path,
        http: aiohttp.ClientSession) -> None:
    _node()  # before starting a cluster for nothing
    async with sdk_cluster(nats_cluster, pg, tmp_path, http, "sdkjs") as cluster:
        room, edges = cluster.room, cluster.edges
        await cluster.write("meta", {"n": -1})
        config = {
            "router": cluster.router.url, "room": room, "senderUrl": edges[0].public_url,
            "stateUrl": f"{edges[0].url}/v1/rooms/{room}/state", "maxSeconds": MAX_SECONDS,
            "tokens": {"host": token("host", "host"), "viewer": token("viewer"),
                       "sender": token("sender")},
            "codecs": {"host": "json", "viewer": "msgpack", "sender": "json"},
        }
        async with scenario(config, tmp_path / "node.log") as js:
            await js.wait(lambda: js.ready, 30, "the JS host and viewer in the room")
            assert js.on(edges[1]), js.where
            await js.more(5, "before the kill")
            edges[1].kill()
            await js.wait(lambda: js.on(edges[0]), 20, "every JS client moved to edge 0")
            await js.more(5, "on edge 0")
            await asyncio.to_thread(edges[1].start)  # its group back: the room moves back
            await js.wait(lambda: js.on(edges[1]), 20, "every JS client back on edge 1")
            await js.more(5, "back on edge 1")
            result = await js.stop()
        head = await cluster.head()

    assert result["converged"], result
    for who in IN_ROOM:
        seen = result[who]
        assert seen["versions"] == head["versions"], (who, seen, head)
        assert seen["epoch"] == head["epoch"], (who, seen, head)
        assert seen["meta"] == {"final": True}, (who, seen)
        # Redis kept the state: every rejoin patched it.
        assert result["recoveries"][who], (who, result["recoveries"])
        assert all(r["recovered"] for r in result["recoveries"][who]), result["recoveries"]
        assert result["connects"][who] >= 3, result["connects"]
        assert result["redirects"].get(who, 0) >= 1, result["redirects"]  # the `moved` back
    assert result["sent"] >= 15
    assert result["peers"] == list(range(result["sent"])), "each peer message once, in order"
