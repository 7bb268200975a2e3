"""Per-room roles and the rooms config over the wire, on a real ``liveroom
serve``: a host of one room is a viewer in every other; a global host token
is refused; private rooms, allowed kinds and slow mode; the rooms config read
over HTTP and reloaded on SIGHUP (a bad file keeps the one in force)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.auth import mint_token
from edge.client import ClosedError, LiveroomClient
from tests.support import API_KEY, JWT_SECRET, LiveServer, token, until

CODECS = ["msgpack", "json"]
CONFIG = """
[rooms."vip-*"]
private = true

[rooms."slow"]
slow_mode = 30

[rooms."gifts"]
kinds = ["gift"]

[rooms."small"]
max_sections = 2
"""


@pytest.fixture
def rooms_file(tmp_path: Path) -> Path:
    path = tmp_path / "rooms.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def srv(make_server: Callable[..., LiveServer], rooms_file: Path) -> LiveServer:
    return make_server("--rooms-config", str(rooms_file), "--no-agents", "--no-demo-room")


async def client(srv: LiveServer, http: aiohttp.ClientSession, user: str, codec: str,
                 rooms: dict[str, str] | None = None, role: str = "viewer") -> LiveroomClient:
    return await LiveroomClient.connect(srv.ws_url, token(user, role, rooms=rooms or {}),
                                        codec=codec, session=http)


async def error_of(c: LiveroomClient, frame: dict[str, Any]) -> dict[str, Any]:
    reply = await c.request(frame, "none")
    assert reply["type"] == "error", reply
    return reply


@pytest.mark.parametrize("codec", CODECS)
async def test_a_host_of_one_room_is_a_viewer_in_another(
        srv: LiveServer, http: aiohttp.ClientSession, codec: str) -> None:
    host = await client(srv, http, "h1", codec, rooms={"room-a": "host"})
    watcher = await client(srv, http, "w1", codec)
    for room in ("room-a", "room-b"):
        assert (await host.join(room))["type"] == "joined"
        assert (await watcher.join(room))["type"] == "joined"
    await host.set_state("room-a", "meta", {"title": "mine"})
    changed = await watcher.expect("state", room="room-a", section="meta")
    assert changed["value"] == {"title": "mine"}
    err = await error_of(host, {"type": "state", "room": "room-b", "section": "meta",
                                "value": {"title": "stolen"}})
    assert err["code"] == "forbidden"
    err = await error_of(host, {"type": "moderate", "room": "room-b", "op": "kick",
                                "user": "w1"})
    assert err["code"] == "forbidden"
    await host.action("room-a", "comment", {"text": "as host"})
    await host.action("room-b", "comment", {"text": "as viewer"})
    # Two rooms, two coalescing windows: in either order.
    got = {}
    while len(got) < 2:
        frame = await watcher.expect("action")
        got[frame["room"]] = frame
    a, b = got["room-a"], got["room-b"]
    assert a["from"]["role"] == "host" and b["from"]["role"] == "viewer"
    assert a["id"] != b["id"]
    for c in (host, watcher):
        await c.close()


@pytest.mark.parametrize("role", ["host", "moderator"])
async def test_a_global_elevated_token_is_refused_at_hello(
        srv: LiveServer, http: aiohttp.ClientSession, role: str) -> None:
    tok = mint_token(JWT_SECRET, "g1", "g1", role, time.time())
    with pytest.raises(ClosedError) as info:
        await LiveroomClient.connect(srv.ws_url, tok, session=http)
    assert "rooms claim" in info.value.reason


@pytest.mark.parametrize("codec", CODECS)
async def test_private_rooms_admit_only_granted_users(
        srv: LiveServer, http: aiohttp.ClientSession, codec: str) -> None:
    stranger = await client(srv, http, "s1", codec)
    err = await error_of(stranger, {"type": "join", "room": "vip-1"})
    assert err["code"] == "forbidden" and err["reason"] == "private"
    guest = await client(srv, http, "g1", codec, rooms={"vip-1": "viewer"})
    assert (await guest.join("vip-1"))["type"] == "joined"
    err = await error_of(guest, {"type": "join", "room": "vip-2"})
    assert err["reason"] == "private"
    assert (await stranger.join("public"))["type"] == "joined"  # others are open
    for c in (stranger, guest):
        await c.close()


@pytest.mark.parametrize("codec", CODECS)
async def test_kinds_and_slow_mode(srv: LiveServer, http: aiohttp.ClientSession,
                                   codec: str) -> None:
    viewer = await client(srv, http, "v1", codec)
    host = await client(srv, http, "h2", codec, rooms={"slow": "host"})
    for room in ("slow", "gifts"):
        await viewer.join(room)
    await host.join("slow")
    err = await error_of(viewer, {"type": "action", "room": "gifts", "kind": "comment",
                                  "body": {"text": "hi"}})
    assert err["code"] == "forbidden" and err["kind"] == "comment"
    await viewer.action("gifts", "gift", {"gift": "rose"})
    assert (await viewer.expect("action", room="gifts"))["kind"] == "gift"
    await viewer.action("slow", "like", None)
    await viewer.expect("action", room="slow")
    err = await error_of(viewer, {"type": "action", "room": "slow", "kind": "like"})
    assert err["code"] == "rate_limited" and err["reason"] == "slow_mode"
    assert 25 < err["retry_after"] <= 30
    for _ in range(3):  # the host is not slowed
        await host.action("slow", "like", None)
    for _ in range(3):
        frame = await viewer.expect("action", room="slow")
        assert frame["from"]["id"] == "h2"
    for c in (viewer, host):
        await c.close()


async def test_the_config_over_http_and_its_reload_on_sighup(
        srv: LiveServer, http: aiohttp.ClientSession, rooms_file: Path) -> None:
    url = f"{srv.url}/v1/config/rooms"
    async with http.get(url) as r:
        assert r.status == 401 and (await r.json())["code"] == "unauthorized"
    auth = {"Authorization": f"Bearer {API_KEY}"}

    async def config() -> dict[str, Any]:
        async with http.get(url, headers=auth) as r:
            assert r.status == 200
            body: dict[str, Any] = await r.json()
            return body

    first = await config()
    assert [e["match"] for e in first["rooms"]] == ["vip-*", "slow", "gifts", "small"]
    assert first["rooms"][0]["private"] is True and first["reloads"] == 0
    rooms_file.write_text('[rooms."vip-*"]\nprivate = false\n')
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGHUP)
    reloaded = await until(lambda: _reloads(config, 1), 5.0, "the reload")
    assert [e["match"] for e in reloaded["rooms"]] == ["vip-*"]
    c = await client(srv, http, "late", "msgpack")
    assert (await c.join("vip-3"))["type"] == "joined"  # no longer private
    rooms_file.write_text("[rooms.\"vip-*\"]\nprivate = perhaps\n")
    srv.proc.send_signal(signal.SIGHUP)
    kept = await until(lambda: _failed(config), 5.0, "the failed reload")
    assert kept["reloads"] == 1 and kept["rooms"][0]["private"] is False
    await until(lambda: "NOT reloaded" in srv.logs(), 5.0, "the logged refusal")
    await c.close()


async def _reloads(config: Callable[[], Any], n: int) -> dict[str, Any] | None:
    body: dict[str, Any] = await config()
    return body if body["reloads"] >= n else None


async def _failed(config: Callable[[], Any]) -> dict[str, Any] | None:
    body: dict[str, Any] = await config()
    return body if body["last_reload_ok"] is False else None


def test_a_bad_rooms_config_is_a_usage_error(make_server: Callable[..., LiveServer],
                                             tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[default]\nhistory = -1\n")
    with pytest.raises(RuntimeError, match="history must be"):
        make_server("--rooms-config", str(bad), "--no-agents")


@pytest.mark.parametrize("codec", CODECS)
async def test_a_room_section_cap_below_the_edges(srv: LiveServer, http: aiohttp.ClientSession,
                                                 codec: str) -> None:
    host = await client(srv, http, "cap-h", codec, rooms={"small": "host", "big": "host"})
    for room in ("small", "big"):
        await host.join(room)
    for section in ("a", "b"):
        await host.set_state("small", section, 1)
        await host.expect("state", room="small", section=section)
    err = await error_of(host, {"type": "state", "room": "small", "section": "c", "value": 1})
    assert err["code"] == "too_many_sections" and err["limit"] == 2
    await host.set_state("small", "a", 2)  # a section it has: fine
    assert (await host.expect("state", room="small", section="a"))["value"] == 2
    for section in ("a", "b", "c"):  # elsewhere the edge's cap (256)
        await host.set_state("big", section, 1)
        await host.expect("state", room="big", section=section)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with http.post(f"{srv.url}/v1/rooms/small/state/d", json={"value": 1},
                         headers=auth) as r:
        assert r.status == 409 and (await r.json())["code"] == "too_many_sections"
    await host.close()
