"""Events to the backend, in the cluster (docs/BACKEND.md, "Events"): a real
``liveroom edge --events`` publishes to a real nats-server with JetStream,
a real ``liveroom webhooks`` consumes the stream and POSTs to a real
receiver. The backend goes away for ``LIVEROOM_TEST_OUTAGE_S`` seconds (5
in the suite) while members come and go; once back it has every event,
once per id, in order per room. Then the dispatcher itself is killed and
restarted: the durable consumer resumes where it was acknowledged."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.cluster_support import RoleServer
from tests.integration.test_events_outbox import (
    OUTAGE_S,
    SECRET,
    Receiver,
    check_delivery,
    counter,
)
from tests.natsserver import NATS_SERVER, JetStreamServer
from tests.support import LoggedProcess, until

pytestmark = pytest.mark.skipif(not Path(NATS_SERVER).exists(), reason="no nats-server")


def dispatcher(nats: str, receiver: Receiver) -> LoggedProcess:
    child = LoggedProcess("webhooks", lambda line: "webhooks: consuming" in line)
    env = {**os.environ, "LIVEROOM_WEBHOOK_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
    child.start([sys.executable, "-m", "liveroom.cli", "webhooks", "--nats", nats,
                 "--webhook-url", receiver.url, "--webhook-batch", "5",
                 "--webhook-ack-wait", "3"], env, 20)
    return child


async def churn(http: aiohttp.ClientSession, edge: RoleServer, rounds: int,
                rooms: list[str], tag: str) -> None:
    from edge.client import LiveroomClient
    from tests.support import token

    for i in range(rounds):
        clients = []
        # Each room opens and has its joins reported before anyone leaves.
        before = await counter(http, edge, "liveroom_events_emitted_total")  # type: ignore[arg-type]
        for j, room in enumerate(rooms):
            c = await LiveroomClient.connect(edge.public_url, token(f"{tag}{i}-{j}"),
                                             codec="json" if j % 2 else "msgpack",
                                             session=http)
            await c.join(room)
            clients.append(c)

        async def more(b: float = before + 2 * len(rooms)) -> bool:
            return await counter(http, edge, "liveroom_events_emitted_total") >= b  # type: ignore[arg-type]

        await until(more, 10, "room and member events")
        for c in clients:
            await c.close()


async def test_stream_outage_and_dispatcher_restart_lose_nothing(tmp_path: Path) -> None:
    rooms = ["ev-x", "ev-y"]
    (tmp_path / "rooms.toml").write_text('[rooms."ev-*"]\npresence = true\n')
    receiver = Receiver(tmp_path / "received.jsonl").start()
    with JetStreamServer(tmp_path / "nats") as js:
        edge = RoleServer("edge", tmp_path / "edge", "--nats", js.url, "--events",
                          "--rooms-config", str(tmp_path / "rooms.toml"),
                          "--online-interval", "0.1").start()
        hooks = dispatcher(js.url, receiver)
        try:
            async with aiohttp.ClientSession() as http:
                await churn(http, edge, 1, rooms, "a")
                await until(lambda: len(receiver.events()) >= 4, 15, "first events")
                receiver.stop()
                outage_ends = time.monotonic() + OUTAGE_S
                rounds = 1
                while rounds < 3 or time.monotonic() < outage_ends:
                    await churn(http, edge, 1, rooms, "b")
                    rounds += 1
                receiver.start()
                # The dispatcher goes down too, and comes back: the durable
                # consumer resumes after the last acknowledged batch.
                hooks.kill()
                await churn(http, edge, 1, rooms, "c")
                rounds += 1
                hooks = dispatcher(js.url, receiver)

                async def published() -> bool:
                    return await counter(http, edge, "liveroom_events_pending") == 0  # type: ignore[arg-type]

                await until(published, 20, "every event in the stream")
                emitted = await counter(http, edge, "liveroom_events_emitted_total")  # type: ignore[arg-type]
                await until(lambda: len(check_delivery(receiver.events())) >= emitted, 60,
                            "every event at the backend")
        finally:
            hooks.stop()
            edge.stop()
            receiver.stop()
    by_id = check_delivery(receiver.events())
    assert len(by_id) == emitted
    for room in rooms:
        types = [e["type"] for e in by_id.values() if e["room"] == room]
        assert types.count("room.opened") == types.count("room.closed") == rounds, room
        assert all(e["data"]["node"] for e in by_id.values() if e["room"] == room)
