"""CDN origin header semantics against the real server: ETag/304, immutable
versioned URLs that never change body, redirects, encodings."""

from __future__ import annotations

import gzip

import aiohttp
import msgpack

from cdn.client import StatePoller
from tests.support import API_KEY, LiveServer

AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def write(http: aiohttp.ClientSession, srv: LiveServer, room: str, section: str,
                value: object) -> dict:
    async with http.post(f"{srv.url}/v1/rooms/{room}/state/{section}", headers=AUTH,
                         json={"value": value}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_head_has_short_shared_cache_and_a_strong_etag(server: LiveServer, http) -> None:
    await write(http, server, "cdn-h", "meta", {"title": "a"})
    async with http.get(f"{server.url}/v1/rooms/cdn-h/state") as r:
        assert r.status == 200
        assert r.headers["Cache-Control"] == "public, max-age=1, stale-while-revalidate=2"
        etag = r.headers["ETag"]
        assert etag.startswith('"') and not etag.startswith("W/")
        assert "Accept" in r.headers["Vary"]
        head = await r.json()
    assert head["total"] == 1 and head["versions"] == {"meta": 1}
    async with http.get(f"{server.url}/v1/rooms/cdn-h/state",
                        headers={"If-None-Match": etag}) as r:
        assert r.status == 304 and r.headers["ETag"] == etag
        assert await r.read() == b""
    await write(http, server, "cdn-h", "meta", {"title": "b"})
    async with http.get(f"{server.url}/v1/rooms/cdn-h/state",
                        headers={"If-None-Match": etag}) as r:
        assert r.status == 200 and r.headers["ETag"] != etag
        assert (await r.json())["total"] == 2


async def test_msgpack_by_accept_has_its_own_etag(server: LiveServer, http) -> None:
    await write(http, server, "cdn-m", "pinned", {"text": "x"})
    async with http.get(f"{server.url}/v1/rooms/cdn-m/state") as r:
        json_etag = r.headers["ETag"]
    async with http.get(f"{server.url}/v1/rooms/cdn-m/state",
                        headers={"Accept": "application/msgpack"}) as r:
        assert r.headers["Content-Type"] == "application/msgpack"
        assert r.headers["ETag"] != json_etag
        head = msgpack.unpackb(await r.read(), raw=False)
    assert head["versions"] == {"pinned": 1}


async def test_versioned_section_urls_are_immutable_and_never_change_body(
        server: LiveServer, http) -> None:
    await write(http, server, "cdn-s", "scoreboard", {"n": 1})
    async with http.get(f"{server.url}/v1/rooms/cdn-s/state") as r:
        url = (await r.json())["sections"]["scoreboard"]
    async with http.get(server.url + url) as r:
        assert r.status == 200
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        first = await r.read()
    await write(http, server, "cdn-s", "scoreboard", {"n": 2})
    # The old URL now redirects (briefly cacheable) to the current version;
    # it never answers a different body itself.
    async with http.get(server.url + url, allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Cache-Control"].startswith("public, max-age=1")
        location = r.headers["Location"]
    assert "/v/2?" in location
    async with http.get(server.url + location) as r:
        assert (await r.json())["value"] == {"n": 2}
    async with http.get(server.url + location.replace("/v/2?", "/v/1?"),
                        allow_redirects=False) as r:
        assert r.status == 302  # still not a body other than version 1's
    assert b'"n":1' in first
    # A version that does not exist yet: 404 that no cache may keep.
    async with http.get(server.url + location.replace("/v/2?", "/v/9?")) as r:
        assert r.status == 404 and r.headers["Cache-Control"] == "no-store"
        assert (await r.json())["code"] == "not_found"
    # Another epoch of the store: gone for good.
    async with http.get(server.url + location.split("?")[0] + "?e=deadbeef") as r:
        assert r.status == 404 and r.headers["Cache-Control"] == "public, max-age=60"


async def test_snapshot_at_total(server: LiveServer, http) -> None:
    await write(http, server, "cdn-snap", "meta", {"title": "t"})
    await write(http, server, "cdn-snap", "pinned", {"text": "p"})
    async with http.get(f"{server.url}/v1/rooms/cdn-snap/state") as r:
        head = await r.json()
    async with http.get(server.url + head["snapshot"]) as r:
        assert r.status == 200 and "immutable" in r.headers["Cache-Control"]
        snap = await r.json()
    assert snap["total"] == 2 and snap["sections"]["pinned"] == {"partial": 1,
                                                                 "value": {"text": "p"}}


async def test_large_bodies_are_gzipped_for_clients_that_accept_it(server: LiveServer,
                                                                   http) -> None:
    await write(http, server, "cdn-gz", "stage", {"cast": ["x" * 40] * 100})
    async with http.get(f"{server.url}/v1/rooms/cdn-gz/state") as r:
        url = (await r.json())["sections"]["stage"]
    async with http.get(server.url + url, headers={"Accept-Encoding": "gzip"},
                        auto_decompress=False) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["ETag"].endswith('.gz"')
        raw = await r.read()
    assert len(raw) < 1000 and b"cast" in gzip.decompress(raw)
    async with http.get(server.url + url, headers={"Accept-Encoding": "identity"}) as r:
        assert "Content-Encoding" not in r.headers and len(await r.read()) > 4000


async def test_poller_fetches_only_the_sections_that_moved(server: LiveServer, http) -> None:
    for section in ("meta", "pinned", "scoreboard"):
        await write(http, server, "cdn-p", section, {"v": 1})
    poller = StatePoller(http, server.url, "cdn-p")
    assert await poller.poll_once() == ["meta", "pinned", "scoreboard"]
    assert poller.requests == 4 and poller.total == 3
    assert await poller.poll_once() == [] and poller.requests == 5  # a 304
    await write(http, server, "cdn-p", "pinned", {"v": 2})
    assert await poller.poll_once() == ["pinned"]
    assert poller.values["pinned"] == {"v": 2} and poller.total == 4
    assert poller.requests == 7


async def test_bad_versioned_urls(server: LiveServer, http) -> None:
    for path, status in (("/v1/rooms/cdn-b/sections/meta/v/abc", 400),
                         ("/v1/rooms/bad%20room/state", 400),
                         ("/v1/rooms/cdn-b/sections/Meta/v/1", 400),
                         ("/v1/rooms/cdn-b/snapshots/5", 404)):
        async with http.get(server.url + path) as r:
            assert r.status == status, (path, await r.text())
            assert "code" in await r.json()
