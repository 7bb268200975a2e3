"""Chaos for peer delivery (issue 12, item 3): two sender edges and a third
edge of recipients, ``liveroom edge`` processes on a real 3-node NATS
cluster, Redis and PostgreSQL. The sender edges' NATS publishes of peer
deliveries are dropped (10 %) or delayed and reordered (20 %, up to 0.3 s)
by the bus's fault hook; the recipients' edge is killed (SIGKILL) mid-run
and its clients reconnect elsewhere with their inbox cursor. 10,000 peer
messages: every one acknowledged to its sender is processed by its
recipient exactly once, in seq order, with no gap (the application keeps a
cursor: the highest seq it processed, and skips what is at or below it)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.client import ClosedError, LiveroomClient
from tests.cluster_support import RoleServer
from tests.natsserver import NatsCluster
from tests.pgserver import PgServer
from tests.redisserver import RedisServer
from tests.support import token

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

TOTAL = 10_000
SENDERS = 4  # two on each sender edge
RECIPIENTS = 8
ACK_EVERY = 25
FAULT = "drop=0.1,delay=0.2,max_delay=0.3,kind=node,seed=7"
EDGE_ARGS = ("--heartbeat", "0.5", "--peer-rate", "100000", "--peer-burst", "100000",
             "--frame-rate", "100000", "--frame-burst", "100000",
             "--inbox-max-messages", "100000", "--inbox-max-bytes", str(1 << 30))


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "nats") as cluster:
        yield cluster


class Recipient:
    """An application that processes its peer messages exactly once: it
    keeps a cursor (the highest seq processed), skips a message at or below
    it (a redelivery after a reconnect), acknowledges every ``ACK_EVERY``,
    and reconnects with the cursor when its connection drops."""

    def __init__(self, http: aiohttp.ClientSession, user: str, urls: list[str]) -> None:
        self.http = http
        self.user = user
        self.urls = urls  # tried in turn
        self.cursor = 0
        self.processed: list[tuple[int, str, str]] = []  # (seq, from, id)
        self.redelivered = 0
        self.gaps: list[tuple[int, int, int]] = []  # (cursor, seq, prev) shown past a gap
        self.reorders = 0  # a frame not above the previous one on the same connection
        self.connects = 0
        self.client: LiveroomClient | None = None
        self.stop = False

    async def run(self) -> None:
        while not self.stop:
            try:
                await self._session()
            except (OSError, aiohttp.ClientError, ClosedError, TimeoutError):
                await asyncio.sleep(0.2)

    async def _session(self) -> None:
        url = self.urls[self.connects % len(self.urls)]
        self.connects += 1
        c = await LiveroomClient.connect(url, token(self.user), session=self.http,
                                         inbox_cursor=self.cursor, timeout=5)
        self.client = c
        last_on_conn = 0
        try:
            while not self.stop:
                try:
                    f = await c.recv(0.5)
                except TimeoutError:
                    continue
                if f.get("type") != "peer":
                    continue
                seq = f["seq"]
                if seq <= last_on_conn:
                    self.reorders += 1
                last_on_conn = max(last_on_conn, seq)
                if seq <= self.cursor:
                    self.redelivered += 1
                    continue
                if f.get("prev", 0) > self.cursor:
                    self.gaps.append((self.cursor, seq, f["prev"]))
                self.processed.append((seq, f["from"]["id"], f["id"]))
                self.cursor = seq
                if len(self.processed) % ACK_EVERY == 0:
                    await c.send({"type": "peer_ack", "upto": self.cursor})
        finally:
            if not c.ws.closed:
                await c.close()

    async def bounce(self) -> None:
        """Drop the connection: the loop reconnects with the cursor."""
        if self.client is not None and not self.client.ws.closed:
            await self.client.ws.close()


async def test_10000_peer_messages_over_a_lossy_bus_and_a_killed_edge_exactly_once(
        nats: NatsCluster, pg: PgServer, tmp_path: Path) -> None:
    redis = RedisServer().start()
    dsn = await pg.create_database("chaos")
    services = ["--nats", ",".join(nats.urls), "--redis", redis.url, "--postgres", dsn,
                "--subject-prefix", f"c{time.monotonic_ns()}"]
    edges = [RoleServer("edge", tmp_path / f"edge-{i}", "--node-id", f"edge-{i}",
                        "--group", f"g{i}", *EDGE_ARGS, *services,
                        env={"LIVEROOM_TEST_BUS_FAULT": FAULT} if i < 2 else {})
             for i in range(3)]
    started = time.monotonic()
    try:
        await asyncio.gather(*(asyncio.to_thread(e.start) for e in edges))
        for e in edges[:2]:
            assert "TEST HOOK ON" in e.logs(), "the fault hook says loudly that it is on"
        async with aiohttp.ClientSession() as http:
            await _run(http, edges, started)
    finally:
        for e in edges:
            e.stop()
        redis.close()


async def _run(http: aiohttp.ClientSession, edges: list[RoleServer], started: float) -> None:
    sender_urls = [edges[0].public_url, edges[1].public_url]
    # Even recipients live on edge 2 (to be killed) and come back on the
    # sender edges; odd ones live on the sender edges all along.
    recipients = [Recipient(http, f"rcp-{i}",
                            [edges[2].public_url, *sender_urls] if i % 2 == 0
                            else [sender_urls[i // 2 % 2]])
                  for i in range(RECIPIENTS)]
    loops = [asyncio.create_task(r.run()) for r in recipients]
    await _until(lambda: all(r.client is not None for r in recipients), 20, "recipients up")
    await asyncio.sleep(1.0)  # the connection registry entries reach Redis

    acked: dict[str, set[tuple[str, str]]] = {r.user: set() for r in recipients}
    sent = 0
    errors = 0
    kill_at = TOTAL * 2 // 5
    killed = asyncio.Event()

    async def sender(i: int) -> None:
        nonlocal sent, errors
        me = f"snd-{i}"
        c = await LiveroomClient.connect(sender_urls[i % 2], token(me), session=http)
        try:
            for k in range(TOTAL // SENDERS):
                to = recipients[(i + k) % RECIPIENTS].user
                mid = f"{me}-{k}"
                for _ in range(10):  # a retry with the same id is deduplicated
                    try:
                        reply = await c.peer(to, {"k": k}, mid)
                    except TimeoutError:
                        errors += 1
                        continue
                    if reply["type"] == "peer_ack":
                        acked[to].add((me, mid))
                        break
                    errors += 1
                sent += 1
                if sent >= kill_at and not killed.is_set():
                    killed.set()
                    edges[2].kill()  # SIGKILL, mid-run
        finally:
            await c.close()

    await asyncio.gather(*(sender(i) for i in range(SENDERS)))
    assert killed.is_set()
    # The last copies may have been dropped by the bus with no message after
    # them: the next connect delivers them (see edge/peers.py).
    for r in recipients:
        await r.bounce()
    want = {u: len(ids) for u, ids in acked.items()}
    try:
        await _until(lambda: all(len(r.processed) >= want[r.user] for r in recipients), 60,
                     "every recipient processed what was acknowledged to its senders")
    except TimeoutError:
        pass  # counted below: what is missing is lost
    for r in recipients:
        r.stop = True
    await asyncio.gather(*loops)

    lost = duplicated = 0
    for r in recipients:
        got = [(s, m) for _, s, m in r.processed]
        duplicated += len(got) - len(set(got))
        lost += len(acked[r.user] - set(got))
        assert [seq for seq, _, _ in r.processed] == sorted({seq for seq, _, _ in r.processed})
    counts = {
        "messages": TOTAL, "acknowledged": sum(want.values()), "sender_retries": errors,
        "processed": sum(len(r.processed) for r in recipients), "lost": lost,
        "duplicated": duplicated, "gaps": sum(len(r.gaps) for r in recipients),
        "redelivered_and_skipped": sum(r.redelivered for r in recipients),
        "out_of_order_on_a_connection": sum(r.reorders for r in recipients),
        "reconnects": sum(r.connects - 1 for r in recipients),
        "seconds": round(time.monotonic() - started, 1),
    }
    print("peer chaos:", json.dumps(counts))
    assert sum(want.values()) == TOTAL
    assert lost == 0 and duplicated == 0
    assert counts["gaps"] == 0 and counts["out_of_order_on_a_connection"] == 0
    assert counts["processed"] == TOTAL


async def _until(cond: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.1)
