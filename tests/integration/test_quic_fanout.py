"""The QUIC fan-out fast path, in-process so the edge's counters can be read:
a real edge (aiohttp app + QUIC endpoint on ephemeral loopback ports) and
real aioquic WebTransport clients over UDP, in one event loop.

- One ``transmit()`` per connection per tick, whatever the number of messages.
- ``WtSink.buffered()`` (aioquic's unacknowledged stream bytes, a private
  attribute) counts what was written and drains as the peer acknowledges:
  the budget and shedding depend on it, so this pins it to the aioquic version.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from edge.appkeys import NODE_KEY, QUIC_KEY
from edge.auth import mint_token
from edge.client import LiveroomClient
from edge.config import EdgeConfig
from edge.node import EdgeNode
from edge.quic import QuicEdge, WtSink
from liveroom.app import make_app
from liveroom.options import ServeOptions
from liveroom.wiring import start_quic_edge
from tests.support import JWT_SECRET, until

T = 5.0


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[tuple[EdgeNode, QuicEdge, str, str]]:
    opts = ServeOptions(port=0, dev=True, data_dir=tmp_path, jwt_secret=JWT_SECRET,
                        demo_room=False, quic_port="0",
                        config=EdgeConfig(online_interval=3600.0))
    app = make_app(opts)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    quic = await start_quic_edge(runner.app, opts, 0)
    assert quic is not None
    info = runner.app[QUIC_KEY]
    try:
        yield (runner.app[NODE_KEY], quic, f"https://127.0.0.1:{quic.port}/wt",
               info["cert_sha256"])
    finally:
        await runner.cleanup()
        quic.close()


async def wt_client(url: str, sha: str, user: str) -> LiveroomClient:
    token = mint_token(JWT_SECRET, user, user, "viewer", time.time(), 600)
    return await LiveroomClient.connect(url, token, cert_sha256=sha, timeout=T)


async def test_one_transmit_per_connection_per_tick(
        edge: tuple[EdgeNode, QuicEdge, str, str]) -> None:
    node, quic, url, sha = edge
    clients = [await wt_client(url, sha, f"u{i}") for i in range(3)]
    try:
        for c in clients:
            await c.join("busy")
        quic.queue.flush()
        before = quic.queue.transmits
        sender = {"id": "svc", "name": "svc", "role": "system"}
        # Ten messages in one tick: the first goes out at once (quiet room),
        # the other nine in one batch at the end of the coalescing window.
        for i in range(10):
            node.publish_action("busy", "comment", {"text": str(i)}, sender)
        for c in clients:
            got = [(await c.expect("action", T))["body"]["text"] for _ in range(10)]
            assert got == [str(i) for i in range(10)]
        # 30 deliveries, 2 writes per connection, 1 transmit per write tick.
        assert quic.queue.transmits - before == 2 * len(clients)
    finally:
        for c in clients:
            await c.close()


async def test_buffered_counts_unacknowledged_stream_bytes(
        edge: tuple[EdgeNode, QuicEdge, str, str]) -> None:
    node, _, url, sha = edge
    c = await wt_client(url, sha, "reader")
    try:
        await c.join("big")
        (conn,) = node.hub.rooms["big"].members
        sink = conn.sink
        assert isinstance(sink, WtSink)
        await until(lambda: sink.buffered() == 0, T, "the join reply was not acknowledged", 0.01)
        node.publish_action("big", "note", {"blob": "x" * 30_000},
                            {"id": "svc", "name": "svc", "role": "system"})
        # Written, not yet transmitted (that happens once per tick).
        assert sink.buffered() > 30_000
        assert (await c.expect("action", T))["kind"] == "note"
        await until(lambda: sink.buffered() == 0, T, "the client's acks did not drain it", 0.01)
    finally:
        await c.close()
