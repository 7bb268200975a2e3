"""Events to the backend, embedded (docs/BACKEND.md, "Events"): a real
``liveroom serve`` with ``--webhook-url`` and a real receiver process
(tests/event_receiver.py) that checks signatures. The backend goes away for
``LIVEROOM_TEST_OUTAGE_S`` seconds (5 in the suite; the acceptance run uses
60) while members come and go; once it is back it has every event, once per
id, in order per room. The outbox survives a SIGKILL of the server."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.client import LiveroomClient
from tests.event_receiver import read_events
from tests.support import LiveServer, LoggedProcess, free_port, until

SECRET = "whsec_integration_test_secret"
OUTAGE_S = float(os.environ.get("LIVEROOM_TEST_OUTAGE_S", "5"))


class Receiver:
    """tests/event_receiver.py on a fixed port, stopped and started at will."""

    def __init__(self, out: Path) -> None:
        self.port = free_port()
        self.out = out
        self.child = LoggedProcess("receiver", lambda line: "receiver listening" in line)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def start(self) -> Receiver:
        env = {**os.environ, "LIVEROOM_WEBHOOK_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
        self.child.start([sys.executable, "-m", "tests.event_receiver", "--port",
                          str(self.port), "--out", str(self.out)], env, 15)
        return self

    def stop(self) -> None:
        self.child.kill()

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.out)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(tmp_path / "received.jsonl").start()
    yield r
    r.stop()


def server(data: Path, receiver: Receiver, rooms_file: Path,
           secret: str = SECRET) -> LiveServer:
    rooms_file.write_text('[rooms."ev-*"]\npresence = true\n')
    return LiveServer(data, "--webhook-url", receiver.url, "--rooms-config", str(rooms_file),
                      "--online-interval", "0.1", "--no-agents", "--no-demo-room",
                      "--webhook-batch", "7", env={"LIVEROOM_WEBHOOK_SECRET": secret})


async def counter(http: aiohttp.ClientSession, srv: LiveServer, name: str) -> float:
    async with http.get(f"{srv.url}/metrics") as r:
        text = await r.text()
    return sum(float(m.group(1)) for m in re.finditer(
        rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))


def check_delivery(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Once per id (a repeat is the same event), in order per room: within a
    room, the ids of one emitting process come in counter order. Returns the
    events by id."""
    by_id: dict[str, dict[str, Any]] = {}
    last: dict[tuple[str, str], int] = {}
    for ev in events:
        seen = by_id.get(ev["id"])
        if seen is not None:
            assert seen == ev, "a redelivery must be the same event"
            continue
        by_id[ev["id"]] = ev
        prefix, _, n = ev["id"].rpartition("-")
        key = (ev["room"], prefix)
        assert int(n, 16) > last.get(key, 0), f"out of order in room {ev['room']}: {ev}"
        last[key] = int(n, 16)
    return by_id


async def churn(srv: LiveServer, http: aiohttp.ClientSession, rounds: int,
                rooms: list[str]) -> None:
    """Members come and go in ``rooms`` (opened, member changes, closed)."""
    for i in range(rounds):
        clients = []
        # Each room opens and has its joins reported (members.changed on the
        # next tick) before anyone leaves.
        before = await counter(http, srv, "liveroom_events_emitted_total")
        for j, room in enumerate(rooms):
            c = await LiveroomClient.connect(srv.ws_url, srv.token(f"u{i}-{j}"),
                                             codec="json" if j % 2 else "msgpack",
                                             session=http)
            await c.join(room)
            clients.append(c)
        await until(lambda b=before: _more(http, srv, b + 2 * len(rooms)), 10,
                    "room and member events")
        for c in clients:
            await c.close()


async def _more(http: aiohttp.ClientSession, srv: LiveServer, before: float) -> bool:
    return await counter(http, srv, "liveroom_events_emitted_total") >= before


async def test_backend_outage_loses_nothing(tmp_path: Path, receiver: Receiver,
                                            http: aiohttp.ClientSession) -> None:
    rooms = ["ev-a", "ev-b", "ev-c"]
    with server(tmp_path / "data", receiver, tmp_path / "rooms.toml") as srv:
        await churn(srv, http, 1, rooms)
        await until(lambda: len(receiver.events()) >= 6, 10, "first events")
        receiver.stop()
        # The outage: members keep coming and going for OUTAGE_S seconds.
        outage_ends = time.monotonic() + OUTAGE_S
        rounds = 0
        while rounds < 2 or time.monotonic() < outage_ends:
            await churn(srv, http, 1, rooms)
            rounds += 1
        assert await counter(http, srv, "liveroom_events_pending") > 0
        receiver.start()

        async def all_in() -> bool:
            return (await counter(http, srv, "liveroom_events_pending") == 0
                    and await counter(http, srv, "liveroom_events_buffered") == 0)

        await until(all_in, 60, "the outbox drained")
        emitted = await counter(http, srv, "liveroom_events_emitted_total")
        assert await counter(http, srv, "liveroom_events_retries_total") >= 1
    by_id = check_delivery(receiver.events())
    assert len(by_id) == emitted
    per_room = {r: [e for e in by_id.values() if e["room"] == r] for r in rooms}
    for room, evs in per_room.items():
        types = [e["type"] for e in evs]
        assert types.count("room.opened") == types.count("room.closed") == rounds + 1, room
        joined = [u for e in evs if e["type"] == "members.changed" for u in e["data"]["joined"]]
        left = [u for e in evs if e["type"] == "members.changed" for u in e["data"]["left"]]
        assert sorted(joined) == sorted(left) and len(joined) == rounds + 1


async def test_the_outbox_survives_sigkill(tmp_path: Path, receiver: Receiver,
                                           http: aiohttp.ClientSession) -> None:
    rooms = ["ev-k1", "ev-k2"]
    data = tmp_path / "data"
    receiver.stop()
    srv = server(data, receiver, tmp_path / "rooms.toml").start()
    try:
        await churn(srv, http, 2, rooms)

        async def durable() -> bool:
            return (await counter(http, srv, "liveroom_events_buffered") == 0
                    and await counter(http, srv, "liveroom_events_pending") >= 8)

        await until(durable, 10, "events written to the outbox")
        emitted = await counter(http, srv, "liveroom_events_emitted_total")
        srv.kill()
        receiver.start()
        srv.start()
        await until(lambda: len(check_delivery(receiver.events())) >= emitted, 30,
                    "the events from before the kill")
    finally:
        srv.stop()
    by_id = check_delivery(receiver.events())
    assert "undelivered events from before" in srv.logs()
    first = [e for e in by_id.values() if e["type"] == "room.opened"]
    assert {e["room"] for e in first} == set(rooms)


async def test_a_wrong_secret_is_refused_and_retried(tmp_path: Path, receiver: Receiver,
                                                     http: aiohttp.ClientSession) -> None:
    """The backend answers 401 (wrong secret): nothing is dropped, the
    events wait, retried, logged at ERROR."""
    with server(tmp_path / "data", receiver, tmp_path / "rooms.toml",
                secret="not-the-receivers-secret") as srv:
        await churn(srv, http, 1, ["ev-w"])
        await until(lambda: "refused a webhook batch with HTTP 401" in srv.logs(), 10,
                    "the refusal logged")
        assert await counter(http, srv, "liveroom_events_pending") >= 1
    assert receiver.events() == []


def test_webhook_url_without_a_secret_is_a_usage_error(tmp_path: Path) -> None:
    srv = LiveServer(tmp_path, "--webhook-url", "http://127.0.0.1:9/x", "--no-agents",
                     env={"LIVEROOM_WEBHOOK_SECRET": "short"})
    with pytest.raises(RuntimeError):
        srv.start(timeout=10)
    assert "LIVEROOM_WEBHOOK_SECRET" in srv.logs()


async def test_moderation_events_reach_the_backend(receiver: Receiver, tmp_path: Path) -> None:
    """Bans, mutes, kicks and retractions are ``moderation`` events, from
    the API and from a host's ``moderate`` frame alike."""
    from tests.support import API_KEY, token
    srv = server(tmp_path / "data", receiver, tmp_path / "rooms.toml").start()
    auth = {"Authorization": f"Bearer {API_KEY}"}
    try:
        async with aiohttp.ClientSession() as http:
            host = await LiveroomClient.connect(srv.ws_url, token("mh", rooms={"ev-mod": "host"}),
                                                session=http)
            await host.join("ev-mod")
            async with http.post(f"{srv.url}/v1/rooms/ev-mod/bans", headers=auth,
                                 json={"user": "troll", "seconds": 60, "reason": "spam"}) as r:
                assert r.status == 201
            reply = await host.request({"type": "moderate", "room": "ev-mod", "op": "mute",
                                        "user": "loud"}, "moderated")
            assert reply["type"] == "moderated"
            reply = await host.request({"type": "moderate", "room": "ev-mod", "op": "retract",
                                        "id": "abc-1"}, "moderated")
            assert reply["type"] == "moderated"
            await host.close()

        def moderation() -> list[dict[str, Any]]:
            return [e for e in receiver.events() if e["type"] == "moderation"]

        got = await until(lambda: len(moderation()) >= 3 and moderation(), 10,
                          "three moderation events")
        ops = {e["data"]["op"]: e for e in got}
        assert ops["ban"]["data"]["target"] == "troll" and ops["ban"]["data"]["by"] == "system"
        assert 0 < ops["ban"]["data"]["duration"] <= 60 and ops["ban"]["data"]["reason"] == "spam"
        assert ops["mute"]["data"] == {"op": "mute", "target": "loud", "by": "mh"}
        assert ops["retract"]["data"]["action_id"] == "abc-1"
        assert all(e["room"] == "ev-mod" for e in got)
    finally:
        srv.stop()
