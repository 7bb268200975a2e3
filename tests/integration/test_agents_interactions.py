"""The direct interaction API end to end on a real ``liveroom serve``:
POST -> 202 + id, the SSE stream of the tokens, the stored interaction;
errors with their documented codes; quota exhaustion -> the character
declines in the room and the API answers 429."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.support import LiveServer


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    with LiveServer(tmp_path_factory.mktemp("interactions"), "--agent-backend", "scripted",
                    "--agent-characters", "quinn", "--agent-word-delay", "0.01",
                    "--agent-cooldown", "0.1", "--quota-user-per-day", "400") as s:
        yield s


def auth(srv: LiveServer, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {srv.token(user)}"}


async def read_sse(resp: aiohttp.ClientResponse) -> list[tuple[int, str, Any]]:
    """Every event of a stream until the server ends it."""
    events: list[tuple[int, str, Any]] = []
    cur: dict[str, str] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if "event" in cur:
                events.append((int(cur["id"]), cur["event"], json.loads(cur["data"])))
            cur = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            cur[key] = value
    return events


async def test_interaction_streams_over_sse_and_is_stored(srv: LiveServer, http) -> None:
    url = f"{srv.url}/v1/rooms/demo/agents/quinn/interactions"
    async with http.post(url, json={"text": "what is the capital of France?"},
                         headers=auth(srv, "ivy")) as r:
        assert r.status == 202, await r.text()
        created = await r.json()
    iid = created["id"]
    assert created["events"] == f"/v1/interactions/{iid}/events"
    async with http.get(f"{srv.url}{created['events']}", headers=auth(srv, "ivy"),
                        timeout=aiohttp.ClientTimeout(total=15)) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = await read_sse(r)
    kinds = [e for _, e, _ in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1 and "delta" in kinds
    assert [i for i, _, _ in events] == list(range(1, len(events) + 1))
    done = events[-1][2]
    text = "".join(d["text"] for _, e, d in events if e == "delta")
    assert done["status"] == "done" and done["text"] == text
    assert "ivy" in text and "capital of France" in text
    assert done["usage"]["completion_tokens"] > 0
    async with http.get(f"{srv.url}/v1/interactions/{iid}", headers=auth(srv, "ivy")) as r:
        row = await r.json()
    assert row["status"] == "done" and row["reply"] == text and row["user"] == "ivy"
    # Resuming after the 1st event replays the rest from the store; resuming
    # after the last one ends at once.
    headers = {**auth(srv, "ivy"), "Last-Event-ID": "1"}
    async with http.get(f"{srv.url}/v1/interactions/{iid}/events", headers=headers) as r:
        rest = await read_sse(r)
    assert [i for i, _, _ in rest] == [i for i, _, _ in events if i > 1]
    for past_the_end in (str(events[-1][0]), str(2**70)):
        headers["Last-Event-ID"] = past_the_end
        async with http.get(f"{srv.url}/v1/interactions/{iid}/events", headers=headers,
                            timeout=aiohttp.ClientTimeout(total=10)) as r:
            assert r.status == 200
            assert await read_sse(r) == []
    # Another user does not see it.
    async with http.get(f"{srv.url}/v1/interactions/{iid}", headers=auth(srv, "eve")) as r:
        assert r.status == 404 and (await r.json())["code"] == "not_found"


@pytest.mark.parametrize(("path", "body", "headers", "status", "code"), [
    ("/v1/rooms/demo/agents/nobody/interactions", {"text": "hi"}, "ok", 404, "not_found"),
    ("/v1/rooms/other/agents/quinn/interactions", {"text": "hi"}, "ok", 404, "not_found"),
    ("/v1/rooms/demo/agents/quinn/interactions", {"text": ""}, "ok", 400, "invalid_field"),
    ("/v1/rooms/demo/agents/quinn/interactions", {"txt": "hi"}, "ok", 400, "invalid_field"),
    ("/v1/rooms/demo/agents/quinn/interactions", {"text": "hi"}, None, 401, "unauthorized"),
    ("/v1/rooms/demo/agents/quinn/interactions", {"text": "hi"}, "forged", 401,
     "unauthorized"),
])
async def test_bad_interaction_requests(srv: LiveServer, http, path, body, headers, status,
                                        code) -> None:
    h = {"ok": auth(srv, "ivy"), "forged": {"Authorization": "Bearer x.y.z"},
         None: {}}[headers]
    async with http.post(f"{srv.url}{path}", json=body, headers=h) as r:
        assert r.status == status
        assert (await r.json())["code"] == code
    async with http.get(f"{srv.url}/v1/interactions/nope/events",
                        headers=auth(srv, "ivy")) as r:
        assert r.status == 404


async def test_quota_exhausted_declines_in_the_room_and_429s(srv: LiveServer, http,
                                                             connect) -> None:
    """The user quota is 400 tokens a day: each call reserves its prompt
    estimate + 48 reply tokens, so a few calls use it up."""
    viewer = await connect(srv, "quentin")
    await viewer.join("demo")
    url = f"{srv.url}/v1/rooms/demo/agents/quinn/interactions"
    statuses = []
    for _ in range(8):
        async with http.post(url, json={"text": "hi"}, headers=auth(srv, "quentin")) as r:
            statuses.append(r.status)
            if r.status == 429:
                err = await r.json()
                assert err["code"] == "quota_exceeded" and err["scope"] == "user"
                assert err["advice"] == "retry" and int(r.headers["Retry-After"]) > 0
                break
    assert statuses[0] == 202 and statuses[-1] == 429
    # In the room the character declines with its short line.
    await viewer.action("demo", "comment", {"text": "quinn, one more?"})
    while True:
        frame = await viewer.expect("action", timeout=10.0, kind="agent.say")
        if frame["body"]["reply_to"] and frame["body"]["reply_to"].get("user") == "quentin":
            break
    assert frame["body"]["declined"] == "quota_exceeded"
    assert frame["body"]["scope"] == "user"
    assert frame["body"]["text"] == "I need a short break, back soon!"
    # Someone else is still answered: the room's quota is not used up.
    other = await connect(srv, "rita")
    await other.join("demo")
    await other.action("demo", "comment", {"text": "quinn, hello?"})
    while True:
        frame = await other.expect("action", timeout=10.0, kind="agent.say")
        if frame["body"]["reply_to"] and frame["body"]["reply_to"].get("user") == "rita":
            break
    assert "declined" not in frame["body"]
