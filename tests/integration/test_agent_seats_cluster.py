"""Two ``liveroom agents`` processes sharing their seats in Redis, 20 seats
over one edge: each seat answered by exactly one character; one process
SIGKILLed, every seat answered again by exactly one within 10 s
(docs/AGENTS.md, "Seats")."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import aiohttp

from llm_agents.seats import Seat
from storage.redis_conn import open_redis
from tests.redisserver import RedisServer
from tests.support import LiveServer, until
from tests.support_seats import BACKEND, AgentsProcess, Ears

ROOMS = [f"cl-{i}" for i in range(10)]
SEATS = [Seat(room, name) for room in ROOMS for name in ("quinn", "max")]


async def owners(http: aiohttp.ClientSession, url: str) -> dict[Seat, str | None]:
    out: dict[Seat, str | None] = {}
    for room in ROOMS:
        async with http.get(f"{url}/v1/rooms/{room}/agents", headers=BACKEND) as r:
            for s in (await r.json())["seats"]:
                out[Seat(room, s["character"])] = s["owner"]
    return out


async def test_twenty_seats_two_processes_one_killed(tmp_path: Path, redis_server: RedisServer,
                                                     http: aiohttp.ClientSession) -> None:
    redis = open_redis(redis_server.url)
    await redis.delete("lr:{seats}:all", "lr:{seats}:rooms", "lr:{seats}:v")
    await redis.aclose()
    with LiveServer(tmp_path / "edge", "--no-agents") as edge:
        procs = [AgentsProcess(tmp_path / f"a{i}", edge.ws_url, "--no-agents", "--node-id",
                               f"agents-{i}", "--redis", redis_server.url).start()
                 for i in (1, 2)]
        ears = Ears()
        try:
            await ears.open(edge.ws_url, ROOMS, edge.token)
            for seat in SEATS:
                async with http.post(f"{procs[0].url}/v1/rooms/{seat.room}/agents",
                                     json={"character": seat.character}, headers=BACKEND) as r:
                    assert r.status == 201, await r.text()
            # Both processes own a share of the seats, as each computes it.
            both = await until(lambda: _shared(http, procs), 15, "both processes own seats")
            assert set(both.values()) == {"agents-1", "agents-2"}
            await ears.ask_until_answered(SEATS, timeout=15)
            assert ears.doubles() == []

            procs[1].child.kill()  # SIGKILL: no goodbye in the registry
            killed = time.monotonic()
            await ears.ask_until_answered(SEATS, timeout=10)
            took = time.monotonic() - killed
            assert took < 10
            print(f"takeover: every seat answered {took:.1f} s after the kill")
            assert (await owners(http, procs[0].url)) == dict.fromkeys(SEATS, "agents-1")
            # Once more, and a moment to let a second answer show: one each.
            since = ears.mark()
            for seat in SEATS:
                await ears.ask(seat)
            await until(lambda: ears.answered(since) == set(SEATS), 10, "every seat answers")
            await asyncio.sleep(1.0)  # an observation window for doubles, not a wait
            assert ears.doubles() == [], ears.doubles()
            said = Counter((room, name) for (room, seq, name) in ears.answers)
            assert set(said) == {(s.room, s.character) for s in SEATS}
        finally:
            await ears.close()
            for p in procs:
                p.child.stop()


async def _shared(http: aiohttp.ClientSession,
                  procs: list[AgentsProcess]) -> dict[Seat, str | None] | None:
    views = [await owners(http, p.url) for p in procs]
    if views[0] != views[1] or set(views[0]) != set(SEATS):
        return None
    if set(views[0].values()) != {"agents-1", "agents-2"}:
        return None
    return views[0]
