"""Issue 12, items 5 and 6 against a live ``liveroom serve``: reads never
allocate (an unknown room is a 404 that costs no memory), idle rooms are
dropped, every client frame kind is rate limited (``sync`` and ``join`` by
what they re-encode), and the sections of a room are capped."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import msgpack

from edge.client import LiveroomClient
from tests.support import API_KEY, LiveServer, until

AUTH = {"Authorization": f"Bearer {API_KEY}"}
T = 5.0


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def state_rooms(srv: LiveServer, http: aiohttp.ClientSession) -> int | None:
    """The rooms the server's state store holds (``/healthz``)."""
    async with http.get(f"{srv.url}/healthz") as r:
        n: int | None = (await r.json()).get("state_rooms")
        return n


async def put_state(srv: LiveServer, http: aiohttp.ClientSession, room: str, section: str,
                    value: Any) -> aiohttp.ClientResponse:
    async with http.post(f"{srv.url}/v1/rooms/{room}/state/{section}", headers=AUTH,
                         json={"value": value}) as r:
        await r.read()
        return r


async def test_reads_of_unknown_rooms_are_404_and_allocate_nothing(
        make_server: Callable[..., LiveServer], http: aiohttp.ClientSession) -> None:
    srv = make_server()
    before = await state_rooms(srv, http)
    for _ in range(75):  # 4 routes: 300 GETs of rooms nobody ever wrote
        room = uid("ghost")
        for path in (f"/v1/rooms/{room}/snapshots/0", f"/v1/rooms/{room}/state",
                     f"/v1/rooms/{room}/sections/meta/v/1", f"/v1/rooms/{room}/state/meta"):
            async with http.get(srv.url + path) as r:
                body = await r.json()
                assert r.status == 404 and body["code"] == "not_found", (path, body)
                # Cacheable, briefly: a CDN absorbs a storm of the same
                # unknown URL, and a room that gets state shows up soon.
                cc = r.headers["Cache-Control"]
                assert cc.startswith("public, max-age=") and "no-store" not in cc, cc
    assert before is not None and await state_rooms(srv, http) == before
    # A room with state still reads as before.
    async with http.get(f"{srv.url}/v1/rooms/demo/snapshots/0", allow_redirects=False) as r:
        assert r.status == 302
    async with http.get(f"{srv.url}/v1/rooms/demo/state") as r:
        assert r.status == 200 and (await r.json())["total"] >= 3


async def test_idle_rooms_are_dropped_and_members_keep_theirs(
        make_server: Callable[..., LiveServer], http: aiohttp.ClientSession) -> None:
    srv = make_server("--room-idle-seconds", "1")
    idle, kept = uid("idle"), uid("kept")
    assert (await put_state(srv, http, idle, "meta", {"title": "gone soon"})).status == 200
    member = await LiveroomClient.connect(srv.ws_url, srv.token("keeper"), session=http)
    try:
        await member.join(kept)
        assert (await put_state(srv, http, kept, "meta", {"title": "kept"})).status == 200
        base = await state_rooms(srv, http)

        async def idle_gone() -> bool:
            async with http.get(f"{srv.url}/v1/rooms/{idle}/state") as r:
                return r.status == 404

        await until(idle_gone, 10, "the idle room to be dropped")
        assert base is not None and await state_rooms(srv, http) == base - 1
        # A room with a member stays, however long nobody writes.
        await asyncio.sleep(1.5)
        async with http.get(f"{srv.url}/v1/rooms/{kept}/state") as r:
            assert r.status == 200 and (await r.json())["versions"] == {"meta": 1}
        # The demo room is kept by its scoreboard keeper.
        async with http.get(f"{srv.url}/v1/rooms/demo/state") as r:
            assert r.status == 200
        # A dropped room starts again from nothing when written.
        assert (await put_state(srv, http, idle, "meta", {"title": "again"})).status == 200
        async with http.get(f"{srv.url}/v1/rooms/{idle}/state") as r:
            assert (await r.json())["total"] == 1
    finally:
        await member.close()


async def _raw_replies(ws: aiohttp.ClientWebSocketResponse, n: int, timeout: float
                       ) -> list[tuple[dict[str, Any], int]]:
    """The next ``n`` frames that answer a ref (with their size in bytes)."""
    out: list[tuple[dict[str, Any], int]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        assert msg.type is aiohttp.WSMsgType.BINARY, msg
        frame = msgpack.unpackb(msg.data, raw=False)
        frames = frame["frames"] if frame.get("type") == "batch" else [frame]
        for f in frames:
            if "ref" in f:
                out.append((f, len(msg.data)))
    return out


async def test_sync_floods_cost_what_they_reencode(
        make_server: Callable[..., LiveServer], http: aiohttp.ClientSession) -> None:
    srv = make_server()
    room = uid("big")
    blob = "x" * 48_000
    for i in range(12):  # ~580 KB of state
        assert (await put_state(srv, http, room, f"s{i}", {"blob": blob})).status == 200
    viewer = await LiveroomClient.connect(srv.ws_url, srv.token("amp"), session=http)
    try:
        joined = await viewer.join(room)
        state_bytes = len(msgpack.packb(joined["sections"]))
        assert state_bytes > 500_000
        ws = viewer.ws
        for ref in range(100, 120):  # 20 frames of ~35 bytes
            await ws.send_bytes(msgpack.packb({"type": "sync", "room": room, "ref": ref}))
        replies = await _raw_replies(ws, 20, 30)
        synced = [size for f, size in replies if f["type"] == "sync"]
        limited = [f for f, _ in replies if f.get("code") == "rate_limited"]
        # Before: 20 full replies, ~12 MB. Now the first few, then refusals
        # that say how long to wait.
        assert sum(synced) <= 4 * state_bytes, (len(synced), sum(synced))
        assert limited and all(f["retry_after"] > 0 for f in limited), limited[:1]
        # Waiting as told works.
        await asyncio.sleep(max(f["retry_after"] for f in limited) + 0.1)
        again = await viewer.request({"type": "sync", "room": room,
                                      "known": joined["versions"],
                                      "epoch": joined["epoch"]}, "sync")
        assert again["type"] == "sync" and again["sections"] == [], again
    finally:
        await viewer.close()


async def test_every_frame_kind_is_rate_limited(
        make_server: Callable[..., LiveServer], http: aiohttp.ClientSession) -> None:
    srv = make_server("--frame-rate", "20", "--frame-burst", "40")
    for kind in ("ping", "join", "leave", "peer_ack"):
        c = await LiveroomClient.connect(srv.ws_url, srv.token(uid("flood")), session=http)
        try:
            room = uid("fl")
            if kind == "leave":
                await c.join(room)
            frames = {
                "ping": {"type": "ping", "t": 1},
                "join": {"type": "join", "room": room},
                "leave": {"type": "leave", "room": room},
                "peer_ack": {"type": "peer_ack", "upto": 1},
            }[kind]
            t0 = time.monotonic()
            for ref in range(200):
                await c.ws.send_bytes(msgpack.packb({**frames, "ref": ref}))
            answered: list[dict[str, Any]] = []
            if kind == "peer_ack":
                # peer_ack has no reply: the refusals are what comes back.
                await c.ws.send_bytes(msgpack.packb({"type": "ping", "ref": "last"}))
            while True:
                f = await c.recv(T)
                if f.get("ref") == "last" or (kind != "peer_ack" and f.get("ref") == 199):
                    break
                if "ref" in f:
                    answered.append(f)
            elapsed = time.monotonic() - t0
            ok = [f for f in answered if f.get("type") != "error"]
            limited = [f for f in answered if f.get("code") == "rate_limited"]
            assert limited, kind
            assert all(f["retry_after"] > 0 for f in limited)
            assert len(ok) <= 40 + 20 * elapsed + 2, (kind, len(ok), elapsed)
            # The connection stays usable once the client waits.
            await asyncio.sleep(max(f["retry_after"] for f in limited) + 0.1)
            pong = await c.request({"type": "ping", "t": 2}, "pong")
            assert pong["type"] == "pong", pong
        finally:
            await c.close()


async def test_undecodable_frames_count_against_the_frame_rate(
        make_server: Callable[..., LiveServer], http: aiohttp.ClientSession) -> None:
    """Garbage never reaches the session, but each frame still takes a token:
    past the burst the answers are ``rate_limited``, not one ``bad_frame``
    per frame at line rate."""
    srv = make_server("--frame-rate", "20", "--frame-burst", "40")
    c = await LiveroomClient.connect(srv.ws_url, srv.token(uid("junk")), session=http)
    try:
        t0 = time.monotonic()
        for _ in range(200):
            await c.ws.send_bytes(b"\xc1")  # never valid msgpack
        codes: list[str] = []
        while len(codes) < 200:
            f = await c.recv(T)
            if f.get("type") == "error":
                codes.append(f["code"])
        elapsed = time.monotonic() - t0
        assert set(codes) == {"bad_frame", "rate_limited"}, set(codes)
        assert codes.count("bad_frame") <= 40 + 20 * elapsed + 2, (codes.count("bad_frame"),
                                                                   elapsed)
    finally:
        await c.close()


async def test_sections_per_room_are_capped(
        make_server: Callable[..., LiveServer], http: aiohttp.ClientSession) -> None:
    srv = make_server("--max-sections", "4")
    room = uid("cap")
    for i in range(4):
        assert (await put_state(srv, http, room, f"s{i}", i)).status == 200
    async with http.post(f"{srv.url}/v1/rooms/{room}/state/s4", headers=AUTH,
                         json={"value": 4}) as r:
        body = await r.json()
        assert r.status == 409 and body["code"] == "too_many_sections", body
        assert body["limit"] == 4
    host = await LiveroomClient.connect(srv.ws_url, srv.token("cap-host", "host"),
                                        codec="json", session=http)
    try:
        await host.join(room)
        err = await host.request({"type": "state", "room": room, "section": "s5",
                                  "value": 5}, "state")
        assert err["code"] == "too_many_sections" and err["limit"] == 4, err
        # Writing a section the room has is fine.
        await host.set_state(room, "s1", "again")
        got = await host.expect("state", timeout=T, section="s1")
        assert got["partial"] == 2
    finally:
        await host.close()
    async with http.get(f"{srv.url}/v1/rooms/{room}/state") as r:
        assert sorted((await r.json())["versions"]) == ["s0", "s1", "s2", "s3"]
