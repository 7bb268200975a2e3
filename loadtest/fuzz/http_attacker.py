"""The HTTP attacker: every route of the edge (dev token, publish action,
write state, the CDN GETs, the characters' routes, health, metrics, QUIC
info, static files, unknown paths, and the backend API of
loadtest/fuzz/api_requests.py: moderation, presence, history, retract, room
info and listing, peer messages, the rooms config, seats) with random and
mutated bodies (and bodies past the size bound), methods, headers (with
and without the backend key), path parameters and queries, and now and then
raw bytes on a TCP connection instead of a request (``raw_tcp``). At the
end, ``unseat`` takes back the seats the fuzzers took."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from loadtest.fuzz.api_requests import api_request, path_part
from loadtest.fuzz.attack import Fuzz
from loadtest.fuzz.payloads import (
    KINDS,
    ROOMS,
    SECTIONS,
    USERS,
    byte_mutation,
    encode,
    honest_value,
    mutate,
    nasty,
)
from wire.codecs import JSON

# HTTP answers that are documented and not the server's failure.
DOCUMENTED_5XX = {"unavailable", "model_unavailable"}


def http_request(rng: random.Random, api_key: str | None, user_token: str,
                 action_ids: Mapping[str, Sequence[str]] | None = None
                 ) -> tuple[str, str, str, dict[str, str], bytes | None]:
    """(route, method, path, headers, body) of one fuzzed request: half of
    them to the backend API (``api_request``; ``route`` names it for the
    report), half to the other routes (``route`` is ``""``)."""
    route = ""
    if rng.random() < 0.5:
        route, (method, path, body) = api_request(rng, action_ids or {})
        if body is None and rng.random() < 0.5:
            return (route, *_shaped(rng, api_key, user_token, method, path, None,
                                    bodyless=True))
    else:
        method, path, body = _edge_route(rng)
    return (route, *_shaped(rng, api_key, user_token, method, path, body))


def _edge_route(rng: random.Random) -> tuple[str, str, Any]:
    room = path_part(rng, [*ROOMS, "demo"])
    section = path_part(rng, SECTIONS)
    num = str(rng.choice([0, 1, 2, 5, -1, 2**70, "x", ""]))
    epoch = rng.choice(["", "0123456789abcdef", "zz", "%00"])
    routes: list[tuple[str, str, Any]] = [
        ("POST", "/v1/dev/token", {"user": rng.choice(USERS), "role": "viewer"}),
        ("POST", f"/v1/rooms/{room}/actions", {"kind": rng.choice(KINDS),
                                               "body": honest_value(rng)}),
        ("POST", f"/v1/rooms/{room}/state/{section}", {"value": honest_value(rng)}),
        ("GET", f"/v1/rooms/{room}/state", None),
        ("GET", f"/v1/rooms/{room}/state/{section}", None),
        ("GET", f"/v1/rooms/{room}/sections/{section}/v/{num}?e={epoch}", None),
        ("GET", f"/v1/rooms/{room}/snapshots/{num}?e={epoch}", None),
        ("GET", f"/v1/rooms/{room}/agents", None),
        ("POST", f"/v1/rooms/{room}/agents/{path_part(rng, ['quinn', 'x'])}/interactions",
         {"text": "hello?"}),
        ("GET", f"/v1/interactions/{path_part(rng, ['0' * 32, 'x'])}", None),
        ("GET", rng.choice(["/healthz", "/metrics", "/v1/quic", "/", "/static/app.js",
                            "/static/../pyproject.toml", "/v1/route", "/nope", "/ws"]), None),
        ("GET", "/" + quote(str(nasty(rng))[:300], safe="/", errors="surrogatepass"), None),
    ]
    return rng.choice(routes)


def _shaped(rng: random.Random, api_key: str | None, user_token: str, method: str, path: str,
            body: Any, bodyless: bool = False) -> tuple[str, str, dict[str, str], bytes | None]:
    """The request with its method now and then changed, its headers (the
    backend key, a user's token, a bad one or none) and its body shaped:
    honest, mutated, random bytes, past the size bound, byte-mutated."""
    if rng.random() < 0.1:
        method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
    headers: dict[str, str] = {}
    auth = rng.random()
    if auth < 0.6 and api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    elif auth < 0.8:
        headers["Authorization"] = f"Bearer {user_token}"
    elif auth < 0.9:
        headers["Authorization"] = rng.choice(["Bearer", "Basic eA==", "Bearer " + "x" * 5000])
    if rng.random() < 0.3:
        headers["Accept"] = rng.choice(["application/msgpack", "*/*", "text/html",
                                        "application/*;q=0.5, */*;q=0"])
    if rng.random() < 0.2:
        headers["If-None-Match"] = rng.choice(['"x"', "*", 'W/"1"', '"' + "e" * 3000 + '"'])
    if rng.random() < 0.2:
        headers["Accept-Encoding"] = rng.choice(["gzip", "br", "identity;q=0", "gzip;q=x"])
    data: bytes | None = None
    if bodyless:
        return method, path, headers, None
    if method in ("POST", "PUT", "PATCH") or (method == "DELETE" and body is not None):
        shape = rng.random()
        if body is None or shape < 0.15:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        elif shape < 0.6:
            data = encode(mutate(rng, body), JSON)
        elif shape < 0.65:
            data = b"x" * rng.choice([65536, 70_000, 300_000, 1_100_000])
        elif shape < 0.7:
            # Well-formed and around the 64 KiB bound: under it, at it, past it.
            pad = {"pad": "x" * rng.choice([60_000, 65_400, 65_536, 70_000])}
            data = encode({**body, **pad} if isinstance(body, dict) else pad, JSON)
        else:
            data = encode(body, JSON)
        if rng.random() < 0.2:
            data = byte_mutation(rng, data)
        headers["Content-Type"] = rng.choice(["application/json", "text/plain",
                                              "application/msgpack", "multipart/form-data"])
    return method, path, headers, data


async def http_worker(fz: Fuzz, index: int) -> None:
    rng = random.Random(f"{fz.args.seed}/http/{index}")
    user_token = await fz.token(rng.choice(USERS))
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while not fz.stop.is_set():
            if rng.random() < 0.03:
                await raw_tcp(fz, rng)
                continue
            route, method, path, headers, data = http_request(
                rng, fz.server.api_key, user_token, fz.action_ids)
            try:
                async with http.request(method, fz.server.url + path, headers=headers,
                                        data=data, allow_redirects=False) as r:
                    body = await r.read()
                    fz.stats.http[str(r.status)] += 1
                    if route:
                        fz.stats.api[f"{route} {r.status}"] += 1
                    if r.status >= 500:
                        code = _code_of(body)
                        if not (r.status == 503 and code in DOCUMENTED_5XX):
                            fz.stats.fail(f"http: {method} {path[:120]} answered {r.status} "
                                          f"{body[:200]!r}")
            except TimeoutError:
                fz.stats.http["timeout"] += 1
                fz.stats.fail(f"http: {method} {path[:120]} hung for 10 s")
            except (aiohttp.ClientError, ValueError) as exc:
                # A request aiohttp refuses to send, or a connection the
                # server closed on a bad request: counted, not a failure.
                kind = type(exc).__name__
                fz.stats.http[kind] += 1
                fz.stats.examples.setdefault(kind, f"{method} {path[:80]}: {exc!s:.200}")
            await asyncio.sleep(0.005 + 0.01 * rng.random())


def _code_of(body: bytes) -> str | None:
    try:
        got = json.loads(body)
    except ValueError:
        return None
    return got.get("code") if isinstance(got, dict) else None


async def unseat(fz: Fuzz, http: aiohttp.ClientSession) -> None:
    """Take back every seat the fuzzers took (the seat routes name only the
    fuzz rooms): each seated character holds a connection, which the run's
    connection count must not see as a leak."""
    if not fz.server.api_key:
        return
    headers = {"Authorization": f"Bearer {fz.server.api_key}"}
    timeout = aiohttp.ClientTimeout(total=10)
    for room in ROOMS:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            async with http.get(f"{fz.server.url}/v1/rooms/{room}/agents", headers=headers,
                                timeout=timeout) as r:
                seats = (await r.json()).get("seats", []) if r.status == 200 else []
            for seat in seats:
                async with http.delete(f"{fz.server.url}/v1/rooms/{room}/agents/"
                                       f"{seat['character']}", headers=headers,
                                       timeout=timeout) as r:
                    await r.read()


async def raw_tcp(fz: Fuzz, rng: random.Random) -> None:
    """Bytes on the HTTP port that are not (quite) a request."""
    host, port = urlsplit(fz.server.url).hostname, urlsplit(fz.server.url).port
    junk = rng.choice([
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"a" * 10000 + b"\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello's start
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"POST /v1/rooms/fz-0/actions HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n{",
        b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))),
    ])
    fz.stats.attacks["tcp/raw"] += 1
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except (OSError, TimeoutError) as exc:
        fz.stats.fail(f"tcp: cannot connect: {exc!r}")
        return
    try:
        writer.write(junk)
        with contextlib.suppress(OSError, TimeoutError):
            head = await asyncio.wait_for(reader.read(200), 1.0)
            if head.startswith(b"HTTP/1.1 5"):
                fz.stats.fail(f"tcp: {junk[:40]!r} answered {head[:40]!r}")
    finally:
        writer.transport.abort()
