"""Room history, retract, room info and backend peer messages over a real
``liveroom serve`` with a rooms config (docs/PROTOCOL.md, "History",
"HTTP endpoints"), both codecs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.client import LiveroomClient
from tests.support import API_KEY, LiveServer, until

ROOMS = """
[default]
history = 0

[rooms."hist-*"]
history = 3
history_kinds = ["comment", "gift"]

[rooms."short-*"]
history = 10
history_ttl = 1

[rooms."secret-*"]
private = true
history = 5
"""

AUTH = {"Authorization": f"Bearer {API_KEY}"}
CODECS = ["msgpack", "json"]


@pytest.fixture(scope="module")
def hserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("hist")
    config = Path(data) / "rooms.toml"
    config.write_text(ROOMS)
    with LiveServer(data, "--rooms-config", str(config), "--action-burst", "200",
                    "--action-rate", "200", "--inbox-max-messages", "3") as srv:
        yield srv


@pytest.fixture
async def clients(http: aiohttp.ClientSession) -> AsyncIterator[Any]:
    opened: list[LiveroomClient] = []

    async def _connect(srv: LiveServer, user: str, codec: str = "msgpack",
                       rooms: dict[str, str] | None = None) -> LiveroomClient:
        c = await LiveroomClient.connect(srv.ws_url, srv.token(user, rooms=rooms),
                                         codec=codec, session=http)
        opened.append(c)
        return c

    yield _connect
    for c in opened:
        if not c.ws.closed:
            await c.close()


async def _get(http: aiohttp.ClientSession, url: str,
               headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    async with http.get(url, headers=headers) as r:
        return r.status, await r.json(), r.headers


def _texts(frames: list[dict[str, Any]]) -> list[str]:
    return [f["body"]["text"] if f["kind"] == "comment" else f["kind"] for f in frames]


@pytest.mark.parametrize("codec", CODECS)
async def test_history_on_join_keeps_the_configured_kinds_at_most_n(
        hserver: LiveServer, clients: Any, http: aiohttp.ClientSession, codec: str) -> None:
    room = f"hist-join-{codec}"
    a = await clients(hserver, f"hj-a-{codec}", codec)
    joined = await a.join(room)
    assert joined["history"] == []
    for i in range(4):
        await a.action(room, "comment", {"text": f"c{i}"})
        await a.action(room, "like", None)  # not a history kind
    await a.action(room, "gift", {"gift": "rose", "count": 1})
    last = await a.expect("action", kind="gift")
    b = await clients(hserver, f"hj-b-{codec}", codec)
    history = (await b.join(room))["history"]
    assert _texts(history) == ["c2", "c3", "gift"]  # at most 3, likes not kept
    assert history[-1]["id"] == last["id"] and history[-1]["from"]["id"] == f"hj-a-{codec}"
    # The HTTP view: the same frames, public, cacheable.
    status, body, headers = await _get(http, f"{hserver.url}/v1/rooms/{room}/history?limit=2")
    assert status == 200 and _texts(body["history"]) == ["c3", "gift"]
    assert headers["Cache-Control"] == "public, max-age=2"


async def test_joined_has_no_history_in_a_room_without_it(hserver: LiveServer,
                                                          clients: Any,
                                                          http: aiohttp.ClientSession) -> None:
    a = await clients(hserver, "nohist-a")
    await a.join("plain-1")
    await a.action("plain-1", "comment", {"text": "x"})
    await a.expect("action")
    assert "history" not in await (await clients(hserver, "nohist-b")).join("plain-1")
    status, body, _ = await _get(http, f"{hserver.url}/v1/rooms/plain-1/history")
    assert status == 404 and body["code"] == "not_found"


async def test_history_entries_expire_after_the_ttl(hserver: LiveServer, clients: Any,
                                                    http: aiohttp.ClientSession) -> None:
    a = await clients(hserver, "ttl-a")
    await a.join("short-1")
    await a.action("short-1", "comment", {"text": "soon gone"})
    await a.expect("action")
    url = f"{hserver.url}/v1/rooms/short-1/history"
    assert _texts((await _get(http, url))[1]["history"]) == ["soon gone"]

    async def empty() -> bool:
        return (await _get(http, url))[1]["history"] == []

    await until(empty, 5.0, "the entry past its 1 s TTL")
    assert (await (await clients(hserver, "ttl-b")).join("short-1"))["history"] == []


async def test_history_bad_limit_and_private_rooms(hserver: LiveServer,
                                                   http: aiohttp.ClientSession) -> None:
    for bad in ("0", "x", "-1", "4"):
        status, body, _ = await _get(http, f"{hserver.url}/v1/rooms/hist-b/history?limit={bad}")
        assert status == 400 and body["code"] == "invalid_field" and body["field"] == "limit"
    status, body, _ = await _get(http, f"{hserver.url}/v1/rooms/secret-1/history")
    assert status == 401 and body["code"] == "unauthorized"
    status, body, headers = await _get(http, f"{hserver.url}/v1/rooms/secret-1/history", AUTH)
    assert status == 200 and body["history"] == []
    assert headers["Cache-Control"] == "private, no-store"


@pytest.mark.parametrize("codec", CODECS)
async def test_a_moderator_retracts_over_the_wire(hserver: LiveServer, clients: Any,
                                                  http: aiohttp.ClientSession, codec: str) -> None:
    room = f"hist-retract-{codec}"
    mod = await clients(hserver, f"rm-mod-{codec}", codec, rooms={room: "moderator"})
    viewer = await clients(hserver, f"rm-v-{codec}", codec)
    await mod.join(room)
    await viewer.join(room)
    await viewer.action(room, "comment", {"text": "rude"})
    await viewer.action(room, "comment", {"text": "fine"})
    rude = await mod.expect("action", body={"text": "rude"})
    await mod.expect("action", body={"text": "fine"})
    # A viewer may not retract.
    err = await viewer.request({"type": "moderate", "room": room, "op": "retract",
                                "id": rude["id"]}, "moderated")
    assert err["type"] == "error" and err["code"] == "forbidden"
    done = await mod.request({"type": "moderate", "room": room, "op": "retract",
                              "id": rude["id"]}, "moderated")
    assert done["type"] == "moderated" and done["op"] == "retract" and done["id"] == rude["id"]
    got = await viewer.expect("retract")
    assert got == {"type": "retract", "room": room, "id": rude["id"]}
    _, body, _ = await _get(http, f"{hserver.url}/v1/rooms/{room}/history")
    assert _texts(body["history"]) == ["fine"]
    late = await clients(hserver, f"rm-late-{codec}", codec)
    assert _texts((await late.join(room))["history"]) == ["fine"]


async def test_the_backend_retracts_by_id(hserver: LiveServer, clients: Any,
                                          http: aiohttp.ClientSession) -> None:
    room = "hist-backend"
    a = await clients(hserver, "rb-a", "json")
    await a.join(room)
    async with http.post(f"{hserver.url}/v1/rooms/{room}/actions", headers=AUTH,
                         json={"kind": "comment", "body": {"text": "oops"}}) as r:
        assert r.status == 202
        answered = (await r.json())["id"]
    oops = await a.expect("action")
    assert oops["id"] == answered  # the backend learns the id it may retract
    url = f"{hserver.url}/v1/rooms/{room}/actions/{oops['id']}"
    async with http.delete(url) as r:
        assert r.status == 401 and (await r.json())["code"] == "unauthorized"
    async with http.delete(url, headers=AUTH) as r:
        assert r.status == 202 and (await r.json())["in_history"] is True
    assert (await a.expect("retract"))["id"] == oops["id"]
    assert (await _get(http, f"{hserver.url}/v1/rooms/{room}/history"))[1]["history"] == []
    # An id history does not hold is still broadcast (it may be on screens).
    async with http.delete(f"{hserver.url}/v1/rooms/{room}/actions/not-kept",
                           headers=AUTH) as r:
        assert r.status == 202 and (await r.json())["in_history"] is False
    assert (await a.expect("retract"))["id"] == "not-kept"
    async with http.delete(f"{hserver.url}/v1/rooms/{room}/actions/{'x' * 65}",
                           headers=AUTH) as r:
        assert r.status == 400 and (await r.json())["field"] == "id"


async def test_room_info_and_listing(hserver: LiveServer, clients: Any,
                                     http: aiohttp.ClientSession) -> None:
    members = [await clients(hserver, f"li-{i}") for i in range(3)]
    for i, c in enumerate(members):
        await c.join(f"list-{i % 2}")  # list-0: two members, list-1: one
    await members[0].join("lust-0")
    status, body, _ = await _get(http, f"{hserver.url}/v1/rooms/list-0", AUTH)
    assert status == 200 and body["room"] == "list-0" and body["online"] == 2
    assert body["config"]["history"] == 0 and body["total"] == 0 and "epoch" in body
    status, body, _ = await _get(http, f"{hserver.url}/v1/rooms/hist-nobody", AUTH)
    assert status == 404 and body["code"] == "not_found"
    assert (await _get(http, f"{hserver.url}/v1/rooms/list-0"))[0] == 401
    # Listing: prefix, sorted, one per page, the cursor to go on.
    url = f"{hserver.url}/v1/rooms?prefix=list-&limit=1"
    _, page, _ = await _get(http, url, AUTH)
    assert page["rooms"] == [{"room": "list-0", "online": 2}]
    _, page, _ = await _get(http, f"{url}&cursor={page['next_cursor']}", AUTH)
    assert page == {"rooms": [{"room": "list-1", "online": 1}], "next_cursor": None}
    for bad in ("limit=0", "limit=1001", "limit=x", "prefix=a%20b", "cursor=%2A%2A"):
        status, body, _ = await _get(http, f"{hserver.url}/v1/rooms?{bad}", AUTH)
        assert status == 400 and body["code"] == "invalid_field", bad


@pytest.mark.parametrize("codec", CODECS)
async def test_backend_peer_message_to_one_user(hserver: LiveServer, clients: Any,
                                                http: aiohttp.ClientSession, codec: str) -> None:
    user = f"bp-one-{codec}"
    c = await clients(hserver, user, codec)
    url = f"{hserver.url}/v1/users/{user}/messages"
    msg = {"id": "m-1", "body": {"text": "from the backend"}}
    async with http.post(url, json=msg, headers=AUTH) as r:
        assert r.status == 201
        first = await r.json()
    assert first["to"] == user and first["duplicate"] is False
    got = await c.expect("peer")
    assert got["from"] == {"id": "system", "name": "system"} and got["body"] == msg["body"]
    assert got["seq"] == first["seq"]
    async with http.post(url, json=msg, headers=AUTH) as r:  # a retry
        assert r.status == 201
        again = await r.json()
    assert again["duplicate"] is True and again["seq"] == first["seq"]
    # Delivered once: the next peer frame is the next message, not the retry.
    async with http.post(url, json={"id": "m-2", "body": 2}, headers=AUTH) as r:
        assert r.status == 201
    assert (await c.expect("peer"))["id"] == "m-2"


async def test_backend_peer_messages_to_many(hserver: LiveServer, clients: Any,
                                             http: aiohttp.ClientSession) -> None:
    full, ok = "bp-full", "bp-ok"
    url = f"{hserver.url}/v1/messages"
    for i in range(3):  # --inbox-max-messages 3: the next one is refused
        async with http.post(f"{hserver.url}/v1/users/{full}/messages", headers=AUTH,
                             json={"id": f"f{i}", "body": i}) as r:
            assert r.status == 201
    c = await clients(hserver, ok, "json")
    async with http.post(url, headers=AUTH,
                         json={"to": [full, ok, ok], "id": "all-1", "body": "hi"}) as r:
        assert r.status == 201
        body = await r.json()
    results = {res["to"]: res for res in body["results"]}
    assert len(body["results"]) == 2  # the repeated addressee once
    assert results[full]["error"]["code"] == "inbox_full"
    assert results[ok]["duplicate"] is False
    got = await c.expect("peer", id="all-1")
    assert got["body"] == "hi" and got["from"]["id"] == "system"
    async with http.post(f"{hserver.url}/v1/users/{full}/messages", headers=AUTH,
                         json={"id": "f9", "body": 1}) as r:
        assert r.status == 429 and (await r.json())["code"] == "inbox_full"


@pytest.mark.parametrize(("path", "payload", "code", "field"), [
    ("/v1/messages", {"id": "x", "body": 1}, "missing_field", "to"),
    ("/v1/messages", {"to": [], "id": "x", "body": 1}, "invalid_field", "to"),
    ("/v1/messages", {"to": ["u"] * 1001, "id": "x", "body": 1}, "invalid_field", "to"),
    ("/v1/messages", {"to": ["bad user"], "id": "x", "body": 1}, "invalid_field", "to"),
    ("/v1/messages", {"to": ["u"], "body": 1}, "missing_field", "id"),
    ("/v1/users/u/messages", {"id": "x" * 65, "body": 1}, "invalid_field", "id"),
    ("/v1/users/u/messages", {"id": 5, "body": 1}, "invalid_field", "id"),
    ("/v1/users/u/messages", {"id": "x"}, "missing_field", "body"),
    ("/v1/users/bad%20user/messages", {"id": "x", "body": 1}, "invalid_field", "user"),
])
async def test_backend_peer_messages_bad_input(hserver: LiveServer,
                                               http: aiohttp.ClientSession, path: str,
                                               payload: dict[str, Any], code: str,
                                               field: str) -> None:
    async with http.post(f"{hserver.url}{path}", json=payload, headers=AUTH) as r:
        body = await r.json()
        assert r.status == 400 and body["code"] == code and body["field"] == field, body
    async with http.post(f"{hserver.url}{path}", json=payload) as r:
        assert r.status == 401
