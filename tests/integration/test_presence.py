"""Presence on a real ``liveroom serve`` (docs/PROTOCOL.md, "presence"):
``joined`` carries the member list, ``presence`` frames carry the joins and
leaves of a tick, a user counts once, the cap, the HTTP endpoint, and rooms
without presence unchanged. Both codecs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from edge.client import LiveroomClient
from tests.support import API_KEY, LiveServer, metric, until
from tests.support_presence import Roster, roster

ROOMS = """
[rooms."pres-*"]
presence = true
[rooms."cap-*"]
presence = true
presence_cap = 2
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("presence")
    config = Path(data) / "rooms.toml"
    config.write_text(ROOMS)
    with LiveServer(data, "--rooms-config", str(config), "--online-interval", "0.1") as s:
        yield s


async def _client(srv: LiveServer, http: aiohttp.ClientSession, user: str, codec: str,
                  **grants: str) -> LiveroomClient:
    tok = srv.token(user, "agent" if user.startswith("bot") else "viewer",
                    rooms=grants or None, name=user.title())
    return await LiveroomClient.connect(srv.ws_url, tok, codec=codec, session=http)


@pytest.fixture(params=["msgpack", "json"])
def codec(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_joined_lists_the_members_and_presence_frames_follow(
        srv: LiveServer, http: aiohttp.ClientSession, codec: str) -> None:
    room = f"pres-a-{codec}"
    host = await _client(srv, http, f"ana-{codec}", codec, **{room: "host"})
    ana = await roster(host, room)
    assert ana.members == {f"ana-{codec}": {"id": f"ana-{codec}", "name": f"ana-{codec}".title(),
                                            "role": "host"}}
    bot = await _client(srv, http, f"bot-{codec}", codec)
    bob = await _client(srv, http, f"bob-{codec}", codec)
    bots = await roster(bot, room)
    assert set(bots.members or {}) == {f"ana-{codec}", f"bot-{codec}"}
    assert bots.members is not None and bots.members[f"bot-{codec}"]["role"] == "agent"
    await roster(bob, room)
    everyone = {f"ana-{codec}", f"bot-{codec}", f"bob-{codec}"}
    await until(_sees(ana, everyone), 5, "ana sees the others")
    await bob.close()
    await until(_sees(ana, everyone - {f"bob-{codec}"}), 5, "ana sees bob leave")
    assert all(f["leaves"] == [f"bob-{codec}"] for f in ana.frames if f["leaves"])
    left = await bot.request({"type": "leave", "room": room}, "left")
    assert left["type"] == "left"
    await until(_sees(ana, {f"ana-{codec}"}), 5, "ana sees the agent leave")
    assert await metric(http, srv.url, "liveroom_presence_frames_total") > 0
    await host.close()
    await bot.close()


def _sees(r: Roster, want: set[str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await r.ids() == want
    return check


async def test_a_user_with_two_connections_counts_once(
        srv: LiveServer, http: aiohttp.ClientSession, codec: str) -> None:
    room = f"pres-two-{codec}"
    watcher = await roster(await _client(srv, http, f"w-{codec}", codec), room)
    tab1 = await _client(srv, http, f"cat-{codec}", codec)
    tab2 = await _client(srv, http, f"cat-{codec}", codec)
    await roster(tab1, room)
    second = await roster(tab2, room)
    assert second.members is not None and len(second.members) == 2
    await until(_sees(watcher, {f"w-{codec}", f"cat-{codec}"}), 5, "cat joins once")
    await tab1.close()
    await watcher.pump(0.5)  # several ticks: one tab left, no leave
    assert watcher.members is not None and f"cat-{codec}" in watcher.members
    assert not any(f["leaves"] for f in watcher.frames)
    await tab2.close()
    await until(_sees(watcher, {f"w-{codec}"}), 5, "cat's last tab leaves")
    await watcher.client.close()


async def test_over_the_cap_counts_only_then_the_list_again(
        srv: LiveServer, http: aiohttp.ClientSession, codec: str) -> None:
    room = f"cap-{codec}"
    first = await roster(await _client(srv, http, f"c1-{codec}", codec), room)
    c2 = await _client(srv, http, f"c2-{codec}", codec)
    await roster(c2, room)
    await until(_sees(first, {f"c1-{codec}", f"c2-{codec}"}), 5, "two members")
    c3 = await _client(srv, http, f"c3-{codec}", codec)
    third = await roster(c3, room)
    assert third.members is None  # joined: presence_capped
    await until(_capped(first), 5, "first hears capped")
    capped = [f for f in first.frames if f.get("capped")]
    assert len(capped) == 1 and capped[0]["count"] == 3
    await c3.close()
    await until(_sees(first, {f"c1-{codec}", f"c2-{codec}"}), 5, "the list again")
    assert first.frames[-1]["joins"] and not first.frames[-1]["leaves"]
    await c2.close()
    await first.client.close()


def _capped(r: Roster) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        await r.pump()
        return r.members is None
    return check


async def test_rooms_without_presence_get_no_list_and_no_frames(
        srv: LiveServer, http: aiohttp.ClientSession, codec: str) -> None:
    room = f"plain-{codec}"
    a = await _client(srv, http, f"p1-{codec}", codec)
    joined = await a.join(room)
    assert "presence" not in joined and "presence_capped" not in joined
    assert list(joined) == ["room", "epoch", "total", "versions", "sections", "type", "ref",
                            "members", "state_mode"]
    b = await _client(srv, http, f"p2-{codec}", codec)
    await b.join(room)
    online = await a.expect("online", room=room)
    assert online["count"] == 2
    await b.close()
    await a.expect("online", room=room, count=1)
    await a.close()
    async with http.get(f"{srv.url}/v1/rooms/{room}/presence",
                        headers={"Authorization": f"Bearer {API_KEY}"}) as r:
        assert r.status == 404 and (await r.json())["code"] == "not_found"


async def test_the_http_endpoint(srv: LiveServer, http: aiohttp.ClientSession) -> None:
    room = "pres-http"
    a = await _client(srv, http, "h1", "json", **{room: "moderator"})
    await a.join(room)
    auth = {"Authorization": f"Bearer {API_KEY}"}

    async def members() -> object:
        async with http.get(f"{srv.url}/v1/rooms/{room}/presence", headers=auth) as r:
            assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
            return await r.json()

    body = await until(members, 5, "the endpoint")
    assert body == {"room": room, "count": 1,
                    "members": [{"id": "h1", "name": "H1", "role": "moderator"}]}
    async with http.get(f"{srv.url}/v1/rooms/{room}/presence") as r:
        assert r.status == 401 and (await r.json())["code"] == "unauthorized"
    async with http.get(f"{srv.url}/v1/rooms/bad%20room/presence", headers=auth) as r:
        assert r.status == 400 and (await r.json())["code"] == "invalid_field"
    # Over the cap: the count only.
    cappers = [await _client(srv, http, f"k{i}", "json") for i in range(3)]
    for c in cappers:
        await c.join("cap-http")

    async def capped() -> object:
        async with http.get(f"{srv.url}/v1/rooms/cap-http/presence", headers=auth) as r:
            body = await r.json()
            return body if body.get("capped") else None

    assert await until(capped, 5, "capped") == {"room": "cap-http", "count": 3,
                                                  "capped": True}
    for c in [a, *cappers]:
        await c.close()


async def test_a_kicked_or_banned_member_leaves_the_member_list(
        srv: LiveServer, http: aiohttp.ClientSession, codec: str) -> None:
    """Moderation takes a member out of the room the way a leave does, so
    the room's presence drops it too (edge/rooms.py Rooms.remove)."""
    room = f"pres-mod-{codec}"
    host = await _client(srv, http, f"mh-{codec}", codec, **{room: "host"})
    ana = await roster(host, room)
    bob = await _client(srv, http, f"mb-{codec}", codec)
    cid = await _client(srv, http, f"mc-{codec}", codec)
    await roster(bob, room)
    await roster(cid, room)
    everyone = {f"mh-{codec}", f"mb-{codec}", f"mc-{codec}"}
    await until(_sees(ana, everyone), 5, "the host sees everyone")
    kicked = await host.request({"type": "moderate", "room": room, "op": "kick",
                                 "user": f"mb-{codec}"}, "moderated")
    assert kicked["type"] == "moderated"
    await until(_sees(ana, everyone - {f"mb-{codec}"}), 5, "the kick leaves the list")
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with http.post(f"{srv.url}/v1/rooms/{room}/bans", headers=auth,
                         json={"user": f"mc-{codec}", "reason": "spam"}) as r:
        assert r.status == 201
    await until(_sees(ana, {f"mh-{codec}"}), 5, "the ban leaves the list")
    async with http.get(f"{srv.url}/v1/rooms/{room}/presence", headers=auth) as r:
        assert [m["id"] for m in (await r.json())["members"]] == [f"mh-{codec}"]
    for c in (host, bob, cid):
        await c.close()
