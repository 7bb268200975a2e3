"""What one QUIC connection may hold on an edge (issue 12, item 8): a few
WebTransport sessions, not aioquic's stream limit of them, and frames waiting
for the node bounded in bytes, not only in number. A real ``liveroom serve
--dev`` and the project's WebTransport client (``edge.wt_client``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.integration.test_quic import (  # noqa: F401 - the fixture
    Connect,
    T,
    clients,
    pack,
    uid,
    wait_closed,
    wt,
)
from tests.support import LiveServer
from wire.webtransport import wt_frame


async def test_the_session_past_the_cap_is_refused_429(
        make_server: Callable[..., LiveServer], clients: Connect) -> None:  # noqa: F811
    srv = make_server("--max-wt-sessions", "4")
    c = await clients(srv, uid("many"))
    conn = wt(c)
    assert [await conn.connect_again() for _ in range(3)] == [200, 200, 200]
    assert await conn.connect_again() == 429  # the 5th on this connection
    assert await conn.connect_again() == 429
    # The sessions already open go on; another connection has its own four.
    assert (await c.request({"type": "ping", "t": 1}, "pong", T))["t"] == 1
    other = await clients(srv, uid("other"))
    assert (await other.request({"type": "ping", "t": 2}, "pong", T))["t"] == 2
    assert await wt(other).connect_again() == 200


async def test_frames_waiting_for_the_node_are_bounded_in_bytes(
        make_server: Callable[..., LiveServer], clients: Connect) -> None:  # noqa: F811
    """Frames of 3 KB (well under the frame limit, far under the 256-frame
    cap) sent faster than the node handles them: past ``max_inbound_bytes``
    waiting, the session is closed 4100; another session is unharmed."""
    srv = make_server("--max-inbound-bytes", "4096")
    flooder = await clients(srv, uid("flood"))
    bystander = await clients(srv, uid("calm"))
    frame = wt_frame(pack({"type": "ping", "t": 0, "pad": "x" * 3000}))
    conn = wt(flooder)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 4 * T
    while not conn.closed:
        assert loop.time() < deadline, "the flooded session was never closed"
        conn.send_stream(frame * 60)
        await asyncio.sleep(0.05)
    assert await wait_closed(flooder) == 4100
    assert (await bystander.request({"type": "ping", "t": 3}, "pong", T))["t"] == 3
