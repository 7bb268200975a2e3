"""Seats over the backend API (docs/AGENTS.md, "Seats") on a real
``liveroom serve`` (the characters in its process) and a real ``liveroom
agents`` process: seat, answer, list, unseat, the bounds' refusals, every
bad input, and the seats back after a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from llm_agents.seats import Seat
from tests.support import LiveServer, until
from tests.support_seats import BACKEND, AgentsProcess, Ears

SERVE = ("--agent-characters", "", "--agent-cooldown", "0", "--agent-word-delay", "0.005",
         "--agent-max-seats", "3", "--agent-max-seats-per-room", "2", "--online-interval", "0.2")


@pytest.fixture
async def ears(server_seats: LiveServer) -> AsyncIterator[Ears]:
    e = Ears()
    await e.open(server_seats.ws_url, ["sa", "sb", "sc"], server_seats.token)
    yield e
    await e.close()


@pytest.fixture
def server_seats(tmp_path: Path) -> LiveServer:
    srv = LiveServer(tmp_path / "srv", *SERVE)
    srv.start()
    try:
        yield srv  # type: ignore[misc]
    finally:
        srv.stop()


async def seat(http: aiohttp.ClientSession, url: str, room: str, name: str,
               headers: dict[str, str] = BACKEND) -> tuple[int, dict[str, object]]:
    async with http.post(f"{url}/v1/rooms/{room}/agents", json={"character": name},
                         headers=headers) as r:
        return r.status, await r.json()


async def seats_of(http: aiohttp.ClientSession, url: str, room: str) -> dict[str, object]:
    async with http.get(f"{url}/v1/rooms/{room}/agents", headers=BACKEND) as r:
        assert r.status == 200
        body: dict[str, object] = await r.json()
        return body


async def test_seat_answer_list_unseat_and_back_after_a_restart(
        server_seats: LiveServer, ears: Ears, http: aiohttp.ClientSession) -> None:
    url = server_seats.url
    assert await seat(http, url, "sa", "quinn") == (201, {"room": "sa", "character": "quinn",
                                                         "seated": True})
    assert (await seat(http, url, "sa", "quinn"))[0] == 200  # idempotent
    assert (await seat(http, url, "sb", "max"))[0] == 201
    await ears.ask_until_answered([Seat("sa", "quinn"), Seat("sb", "max")], timeout=10)
    listing = await seats_of(http, url, "sa")
    assert listing["seats"] == [{"character": "quinn", "owner": "agents"}]
    assert listing["limits"] == {"per_room": 2, "per_process": 3, "capacity": 3}
    # A user's token keeps getting the characters this process runs there.
    async with http.get(f"{url}/v1/rooms/sa/agents",
                        headers={"Authorization": f"Bearer {server_seats.token('uma')}"}) as r:
        assert r.status == 200
        assert [a["name"] for a in (await r.json())["agents"]] == ["quinn"]
    # Unseated: the character leaves the room (the viewer alone is online).
    async with http.delete(f"{url}/v1/rooms/sa/agents/quinn", headers=BACKEND) as r:
        assert r.status == 200 and (await r.json())["removed"] is True
    async with http.delete(f"{url}/v1/rooms/sa/agents/quinn", headers=BACKEND) as r:
        assert r.status == 404 and (await r.json())["code"] == "not_found"
    assert (await seats_of(http, url, "sa"))["seats"] == []
    await until(lambda: ears.online.get("sa") == 1, 5, "quinn leaves sa")

    # The seats are stored: after a restart max answers in sb again.
    await ears.close()
    server_seats.stop()
    server_seats.start()
    again = Ears()
    await again.open(server_seats.ws_url, ["sa", "sb"], server_seats.token)
    try:
        await again.ask_until_answered([Seat("sb", "max")], timeout=10)
        assert (await seats_of(http, server_seats.url, "sb"))["seats"] == [
            {"character": "max", "owner": "agents"}]
        assert (await seats_of(http, server_seats.url, "sa"))["seats"] == []
    finally:
        await again.close()


async def test_bounds_are_refused_with_too_many_seats(server_seats: LiveServer,
                                                      http: aiohttp.ClientSession) -> None:
    url = server_seats.url
    assert (await seat(http, url, "sa", "quinn"))[0] == 201
    assert (await seat(http, url, "sa", "max"))[0] == 201
    status, body = await seat(http, url, "sa", "sage")
    assert status == 409
    assert (body["code"], body["scope"], body["limit"]) == ("too_many_seats", "room", 2)
    assert (await seat(http, url, "sb", "sage"))[0] == 201
    status, body = await seat(http, url, "sc", "quinn")  # 3 seats: the process is full
    assert status == 409
    assert (body["code"], body["scope"], body["limit"]) == ("too_many_seats", "cluster", 3)
    # Nothing was stored by a refusal; a seat already there is never refused.
    assert [s["character"] for s in (await seats_of(http, url, "sa"))["seats"]] == [
        "max", "quinn"]
    assert (await seats_of(http, url, "sc"))["seats"] == []
    assert (await seat(http, url, "sa", "quinn"))[0] == 200


@pytest.mark.parametrize("room,body,headers,status,code", [
    ("sa", {"character": "quinn"}, {}, 401, "unauthorized"),
    ("sa", {"character": "quinn"}, {"Authorization": "Bearer wrong"}, 401, "unauthorized"),
    ("sa", {"character": "nobody"}, BACKEND, 404, "not_found"),
    ("sa", {"character": 7}, BACKEND, 400, "invalid_field"),
    ("sa", {"character": "x" * 65}, BACKEND, 400, "invalid_field"),
    ("sa", {}, BACKEND, 400, "invalid_field"),
    ("bad room!", {"character": "quinn"}, BACKEND, 400, "invalid_field"),
    ("r" * 65, {"character": "quinn"}, BACKEND, 400, "invalid_field"),
])
async def test_bad_seat_requests(server_seats: LiveServer, http: aiohttp.ClientSession,
                                 room: str, body: object, headers: dict[str, str],
                                 status: int, code: str) -> None:
    async with http.post(f"{server_seats.url}/v1/rooms/{room}/agents", json=body,
                         headers=headers) as r:
        assert r.status == status
        assert (await r.json())["code"] == code
    async with http.post(f"{server_seats.url}/v1/rooms/sa/agents", data=b"[1, 2]",
                         headers=BACKEND) as r:
        assert r.status == 400
    async with http.post(f"{server_seats.url}/v1/rooms/sa/agents",
                         data=b'{"character": "' + b"q" * 200_000 + b'"}',
                         headers=BACKEND) as r:
        assert r.status in (400, 413)
    async with http.delete(f"{server_seats.url}/v1/rooms/sa/agents/quinn") as r:
        assert r.status == 401
    assert (await seats_of(http, server_seats.url, "sa"))["seats"] == []


async def test_an_agents_process_seats_over_its_own_api(tmp_path: Path,
                                                        http: aiohttp.ClientSession) -> None:
    with LiveServer(tmp_path / "edge", "--no-agents", "--online-interval", "0.2") as edge:
        proc = AgentsProcess(tmp_path / "agents", edge.ws_url, "--no-agents").start()
        ears = Ears()
        try:
            await ears.open(edge.ws_url, ["pa", "pb"], edge.token)
            for room, name in (("pa", "quinn"), ("pa", "max"), ("pb", "sage")):
                assert (await seat(http, proc.url, room, name))[0] == 201
            seats = [Seat("pa", "quinn"), Seat("pa", "max"), Seat("pb", "sage")]
            await ears.ask_until_answered(seats, timeout=10)
            async with http.delete(f"{proc.url}/v1/rooms/pa/agents/max", headers=BACKEND) as r:
                assert r.status == 200
            await until(lambda: ears.online.get("pa") == 2, 5, "max leaves pa")
            await ears.ask_until_answered([Seat("pa", "quinn")], timeout=5)
            assert ears.doubles() == []
        finally:
            await ears.close()
            assert proc.child.stop() == 0, proc.child.logs()
