"""The HTTP attacker: every route of the edge (dev token, publish action,
write state, the CDN GETs, the characters' routes, health, metrics, QUIC
info, static files, unknown paths) with random and mutated bodies, methods,
headers and path parameters, and now and then raw bytes on a TCP connection
instead of a request (``raw_tcp``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

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


def _path_part(rng: random.Random, pool: list[str]) -> str:
    if rng.random() < 0.8:
        return rng.choice(pool)
    return quote(str(nasty(rng))[:200], safe="", errors="surrogatepass")


def http_request(rng: random.Random, api_key: str | None, user_token: str
                 ) -> tuple[str, str, dict[str, str], bytes | None]:
    """(method, path, headers, body) of one fuzzed request."""
    room = _path_part(rng, [*ROOMS, "demo"])
    section = _path_part(rng, SECTIONS)
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
        ("POST", f"/v1/rooms/{room}/agents/{_path_part(rng, ['quinn', 'x'])}/interactions",
         {"text": "hello?"}),
        ("GET", f"/v1/interactions/{_path_part(rng, ['0' * 32, 'x'])}", None),
        ("GET", rng.choice(["/healthz", "/metrics", "/v1/quic", "/", "/static/app.js",
                            "/static/../pyproject.toml", "/v1/route", "/nope", "/ws"]), None),
        ("GET", "/" + quote(str(nasty(rng))[:300], safe="/", errors="surrogatepass"), None),
    ]
    method, path, body = rng.choice(routes)
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
    if method in ("POST", "PUT", "PATCH"):
        shape = rng.random()
        if body is None or shape < 0.15:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        elif shape < 0.6:
            data = encode(mutate(rng, body), JSON)
        elif shape < 0.7:
            data = b"x" * rng.choice([65536, 70_000, 300_000])
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
            method, path, headers, data = http_request(rng, fz.server.api_key, user_token)
            try:
                async with http.request(method, fz.server.url + path, headers=headers,
                                        data=data, allow_redirects=False) as r:
                    body = await r.read()
                    fz.stats.http[str(r.status)] += 1
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
