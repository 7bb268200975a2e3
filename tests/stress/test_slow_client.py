"""A member that stops reading in a busy room is degraded, then closed 4100,
and nobody else notices (docs/PROTOCOL.md, "Backpressure and shedding").

The busy room gets actions of every priority (4 KB custom-kind blobs, gifts,
likes) and state changes from four concurrent backend publishers for up to
``FLOOD_S`` seconds. In it: a member that stops reading at the TCP level
(a raw socket with a 4 KB receive buffer that never reads after ``joined``)
and a normal member. In a second room, a member that gets a steady trickle.
Counted and asserted:

- the slow member is first degraded, then closed with 4100: what it had
  been sent before the close is in order, with gaps (shed actions), and it
  was still sent actions after the first gap; the shedding order holds (no
  like after the first shed comment-class blob, no blob after the first shed
  gift: the server's unsent bytes only grow, so its shedding level only
  rises);
- the normal member of the busy room receives every action, in order (its
  seqs are exactly 1..N), every state change in order (partials only grow,
  latest-wins may skip some) ending at the last one, each within
  ``MAX_DELAY`` of the server's stamp;
- the member of the other room receives every one of its actions, in order,
  within ``MAX_DELAY``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import pytest

from edge.client import LiveroomClient
from loadtest.raw_ws import RawWebSocket
from tests.stress.conftest import Figures
from tests.support import API_KEY, LiveServer, metric

pytestmark = [pytest.mark.stress, pytest.mark.timeout(90)]

BUDGET = 256 << 10
GRACE = 2.0  # --slow-grace
FLOOD_S = 25.0  # publish at most this long waiting for the 4100
AFTER_S = 2.0  # and this long after it
PUBLISHERS = 4
OTHER_RATE = 50.0  # actions a second into the other room
MAX_DELAY = 1.0  # seconds from the server's stamp to a reader's hands
BLOB = "b" * 4000
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Reader:
    """Everything a reading member gets in its room: action seqs, state
    partials and each message's delay from the server's stamp."""

    def __init__(self, client: LiveroomClient, room: str) -> None:
        self.client, self.room = client, room
        self.seqs: list[int] = []
        self.partials: list[int] = []
        self.delays: list[float] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            f = await self.client.recv(timeout=60)
            if f.get("room") != self.room:
                continue
            if f["type"] == "action":
                self.seqs.append(f["seq"])
                self.delays.append(time.time() - f["ts"])
            elif f["type"] == "state":
                self.partials.append(f["partial"])
                self.delays.append(time.time() - f["value"]["t"])

    async def until(self, what: str, pred: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if self.task.done():
                self.task.result()
            assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class Publisher:
    """Backend publishers (POST .../actions and .../state): what they sent,
    by the seq and partial the server answered."""

    def __init__(self, http: aiohttp.ClientSession, srv: LiveServer, room: str) -> None:
        self.http, self.srv, self.room = http, srv, room
        self.seqs: list[int] = []
        self.kinds: dict[int, str] = {}  # seq -> kind
        self.partials: list[int] = []
        self.n = 0

    async def action(self, kind: str, body: Any) -> None:
        async with self.http.post(f"{self.srv.url}/v1/rooms/{self.room}/actions",
                                  headers=AUTH, json={"kind": kind, "body": body}) as r:
            assert r.status == 202, await r.text()
            seq = (await r.json())["seq"]
        self.seqs.append(seq)
        self.kinds[seq] = kind

    async def state(self) -> None:
        async with self.http.post(f"{self.srv.url}/v1/rooms/{self.room}/state/board",
                                  headers=AUTH, json={"value": {"t": time.time()}}) as r:
            assert r.status == 200, await r.text()
            self.partials.append((await r.json())["partial"])

    async def busy(self) -> None:
        """One message of a busy room's mix."""
        self.n += 1
        i = self.n % 10
        if i < 5:
            await self.action("blob", {"data": BLOB})
        elif i < 7:
            await self.action("gift", {"gift": "rose", "count": 1})
        elif i < 9:
            await self.action("like", None)
        else:
            await self.state()


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


async def test_slow_member_is_shed_then_closed_and_nobody_else_notices(
        make_server: Any, http: aiohttp.ClientSession, figures: Figures) -> None:
    srv: LiveServer = make_server("--outbound-budget", str(BUDGET), "--slow-grace", str(GRACE),
                                  "--no-demo-room")
    busy, other = uid("busy"), uid("other")

    slow = await RawWebSocket.connect("127.0.0.1", srv.port, rcvbuf=4096)
    slow.send_obj({"type": "hello", "token": srv.token(uid("slow")), "v": 1})
    slow.send_obj({"type": "join", "room": busy, "ref": 1})
    assert [f["type"] for f in await slow.messages(5)] == ["welcome"]
    assert (await slow.messages(5))[0]["type"] == "joined"
    # From here on the slow member reads nothing until the end.

    fast = await LiveroomClient.connect(srv.ws_url, srv.token(uid("fast")), session=http)
    elsewhere = await LiveroomClient.connect(srv.ws_url, srv.token(uid("else")), session=http)
    assert (await fast.join(busy))["members"] == 2
    assert (await elsewhere.join(other))["members"] == 1
    fast_reader, other_reader = Reader(fast, busy), Reader(elsewhere, other)
    pub, other_pub = Publisher(http, srv, busy), Publisher(http, srv, other)

    closed_at: float | None = None  # wall clock
    slow_got: list[tuple[int, float]] = []  # (seq, server stamp)
    slow_drained: asyncio.Task[None] | None = None

    async def drain_slow() -> None:
        """Once closed, read what the slow member had been sent (before the
        server gives up on flushing it and drops the socket)."""
        while frames := await slow.messages(10):
            slow_got.extend((f["seq"], f["ts"]) for f in frames if f["type"] == "action")
    stop_at = time.monotonic() + FLOOD_S
    flood_from = time.time()

    async def flood() -> None:
        while time.monotonic() < stop_at:
            await pub.busy()

    async def trickle() -> None:
        while time.monotonic() < stop_at:
            await other_pub.action("comment", {"text": f"other {len(other_pub.seqs)}"})
            await asyncio.sleep(1 / OTHER_RATE)

    async def watch() -> None:
        nonlocal closed_at, stop_at, slow_drained
        while time.monotonic() < stop_at:
            closes = await metric(http, srv.url, "liveroom_closes_total", code="4100")
            if closes and closed_at is None:
                closed_at = time.time()
                slow_drained = asyncio.create_task(drain_slow())
                stop_at = min(stop_at, time.monotonic() + AFTER_S)
            await asyncio.sleep(0.1)

    try:
        await asyncio.gather(*(flood() for _ in range(PUBLISHERS)), trickle(), watch())
        shed = await metric(http, srv.url, "liveroom_actions_dropped_total",
                            reason="backpressure")
        assert closed_at is not None, f"never closed 4100 in {FLOOD_S}s ({shed:.0f} shed)"
        assert await metric(http, srv.url, "liveroom_closes_total", code="4100") == 1

        # The normal member of the busy room: every action, in order; state in order.
        n = len(pub.seqs)
        assert sorted(pub.seqs) == list(range(1, n + 1))
        await fast_reader.until("every busy-room action", lambda: len(fast_reader.seqs) >= n, 10)
        assert fast_reader.seqs == list(range(1, n + 1)), "lost or reordered in the busy room"
        last = max(pub.partials)
        await fast_reader.until("the last state", lambda: fast_reader.partials[-1:] == [last],
                                10)
        assert fast_reader.partials == sorted(set(fast_reader.partials))
        # The member of the other room: every action, in order.
        m = len(other_pub.seqs)
        await other_reader.until("every other-room action",
                                 lambda: len(other_reader.seqs) >= m, 10)
        assert other_reader.seqs == list(range(1, m + 1)), "lost or reordered in the other room"
    finally:
        await fast_reader.stop()
        await other_reader.stop()
        await fast.close()
        await elsewhere.close()

    # What the slow member had been sent before the close: in order, some shed.
    assert slow_drained is not None
    await asyncio.wait_for(slow_drained, 10)
    slow.abort()
    assert slow.close_code == 4100, (slow.close_code, slow.close_reason)
    got = [seq for seq, _ in slow_got]
    assert got == sorted(set(got)), "the slow member's actions came out of order"
    missing = sorted(set(range(1, n + 1)) - set(got))
    assert missing and got and missing[0] < got[-1], "closed without being degraded first"
    first_shed = {kind: min((q for q in missing if pub.kinds[q] == kind), default=n + 1)
                  for kind in ("like", "blob", "gift")}
    assert all(q < first_shed["blob"] for q in got if pub.kinds[q] == "like")
    assert all(q < first_shed["gift"] for q in got if pub.kinds[q] == "blob")
    degraded_at = next(ts for seq, ts in slow_got if seq > missing[0])
    # The metric counts each shed action (a batch written in part sheds too).
    slow_shed = len(missing) - sum(q > got[-1] for q in missing)
    assert shed >= slow_shed, (shed, slow_shed)

    figures(budget=BUDGET, slow_grace_s=GRACE, messages=n + len(pub.partials),
            actions=n, state_changes=len(pub.partials), other_room_actions=m,
            closed_after_s=round(closed_at - flood_from, 2),
            degraded_for_s=round(closed_at - degraded_at, 2), slow_received=len(got),
            slow_shed=slow_shed,
            shed_metric=int(shed),
            fast_delay_p50_ms=round(1000 * percentile(fast_reader.delays, 0.5), 1),
            fast_delay_p99_ms=round(1000 * percentile(fast_reader.delays, 0.99), 1),
            fast_delay_max_ms=round(1000 * max(fast_reader.delays), 1),
            other_delay_p99_ms=round(1000 * percentile(other_reader.delays, 0.99), 1),
            other_delay_max_ms=round(1000 * max(other_reader.delays), 1))
    assert max(fast_reader.delays) < MAX_DELAY
    assert max(other_reader.delays) < MAX_DELAY
    assert srv.proc is not None and srv.proc.poll() is None
