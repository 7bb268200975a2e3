"""Slowloris on every HTTP connection (issue 12, item 4): a real edge
(``liveroom serve``'s app behind ``EdgeSite``) and a real router role on
ephemeral ports, spoken to by raw sockets that trickle or stall. Every
request head must be complete within the head timeout of its first byte
(the first request of a connection and every later one), every body within
the body timeout of its head, and an idle keep-alive connection is closed
after the idle timeout; each is closed without an answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from edge.config import EdgeConfig, HttpTimeouts
from liveroom.distributed import RoleProcess
from liveroom.options import RoleOptions
from tests.support import LiveServer, in_process_edge, metric

HEAD = 0.6
BODY = 0.6
IDLE = 1.2
MARGIN = 0.6  # a loaded CI machine's timer lag, and the test's own reads
TIMEOUTS = HttpTimeouts(head=HEAD, body=BODY, idle=IDLE)
T = 5.0


@pytest.fixture
async def port(tmp_path: Path) -> AsyncIterator[int]:
    async with in_process_edge(tmp_path, EdgeConfig(http=TIMEOUTS), dev=True) as p:
        yield p


async def closed_within(reader: asyncio.StreamReader, bound: float) -> bytes:
    """Everything the server sends until it closes; fails past ``bound`` s."""
    got = b""
    async with asyncio.timeout(bound):
        while chunk := await reader.read(65536):
            got += chunk
    return got


async def response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one HTTP response with a Content-Length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), T)
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head, await asyncio.wait_for(reader.readexactly(length), T)


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """``data`` a byte at a time, ``every`` seconds apart, until the peer is gone."""
    for i in range(len(data)):
        if writer.is_closing():
            return
        writer.write(data[i:i + 1])
        try:
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(every)


TOKEN_BODY = b'{"user": "mallory"}'
TOKEN_REQUEST = (b"POST /v1/dev/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(TOKEN_BODY))


async def test_a_trickled_head_is_cut_at_the_head_timeout(
        port: int, http: aiohttp.ClientSession) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = loop.time()
    task = asyncio.create_task(trickle(writer, TOKEN_REQUEST + TOKEN_BODY, HEAD / 6))
    try:
        assert await closed_within(reader, HEAD + MARGIN) == b""
        assert not task.done(), "the trickle ended before the server cut it"
        assert loop.time() - t0 >= HEAD * 0.9
        url = f"http://127.0.0.1:{port}"
        assert await metric(http, url, "liveroom_http_timeouts_total", phase="head") == 1
    finally:
        task.cancel()
        writer.close()


@pytest.mark.parametrize("partial", [b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"G",
                                     b"GET /ws HTTP/1.1\r\nHost: x\r\n"])
async def test_a_partial_head_is_cut_at_the_head_timeout(port: int, partial: bytes) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(partial)
    t0 = loop.time()
    try:
        assert await closed_within(reader, HEAD + MARGIN) == b""
        assert loop.time() - t0 >= HEAD * 0.9
    finally:
        writer.close()


@pytest.mark.parametrize("body", [b"", b'{"us'])
async def test_a_body_that_stalls_is_cut_at_the_body_timeout(port: int, body: bytes) -> None:
    """The head is complete; the body never comes, or stops half way."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(TOKEN_REQUEST + body)
    t0 = loop.time()
    try:
        assert await closed_within(reader, BODY + MARGIN) == b""
        assert loop.time() - t0 >= BODY * 0.9
    finally:
        writer.close()


async def test_a_trickled_body_is_cut_at_the_body_timeout(
        port: int, http: aiohttp.ClientSession) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(TOKEN_REQUEST)
    t0 = loop.time()
    task = asyncio.create_task(trickle(writer, TOKEN_BODY, BODY / 6))
    try:
        assert await closed_within(reader, BODY + MARGIN) == b""
        assert loop.time() - t0 >= BODY * 0.9
        url = f"http://127.0.0.1:{port}"
        assert await metric(http, url, "liveroom_http_timeouts_total", phase="body") == 1
    finally:
        task.cancel()
        writer.close()


async def test_the_second_head_of_a_keep_alive_connection_is_timed_too(port: int) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = await response(reader)
        assert head.startswith(b"HTTP/1.1 200"), head
        t0 = loop.time()
        task = asyncio.create_task(trickle(writer, TOKEN_REQUEST + TOKEN_BODY, HEAD / 6))
        assert await closed_within(reader, HEAD + MARGIN) == b""
        assert not task.done()
        assert loop.time() - t0 >= HEAD * 0.9
        task.cancel()
    finally:
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed(port: int) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await response(reader)
        t0 = loop.time()
        assert await closed_within(reader, IDLE + MARGIN) == b""
        # The idle timeout, not the head timeout: no head was begun.
        assert loop.time() - t0 >= IDLE * 0.9
    finally:
        writer.close()


async def test_honest_clients_are_not_cut(port: int) -> None:
    """Requests on one keep-alive connection, spaced by less than the idle
    timeout but together longer than every timeout; a body in two pieces
    well inside the body timeout; a head in two pieces inside the head one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(3):
            writer.write(TOKEN_REQUEST[:20])
            await asyncio.sleep(HEAD / 4)
            writer.write(TOKEN_REQUEST[20:] + TOKEN_BODY[:5])
            await asyncio.sleep(BODY / 4)
            writer.write(TOKEN_BODY[5:])
            head, body = await response(reader)
            assert head.startswith(b"HTTP/1.1 200"), head + body
            assert b"token" in body
            await asyncio.sleep(IDLE / 2)
    finally:
        writer.close()


async def test_the_router_role_has_the_same_timeouts(tmp_path: Path) -> None:
    """The other HTTP servers facing clients (router, cdn, agents) share the
    timed site: a partial ``GET /v1/route`` head is cut the same way."""
    proc = await RoleProcess(RoleOptions(role="router", port=0, data_dir=tmp_path,
                                         config=EdgeConfig(http=TIMEOUTS))).start()
    try:
        port = int(proc.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/route?room=a HTTP/1.1\r\nHost: x\r\n")
        try:
            assert await closed_within(reader, HEAD + MARGIN) == b""
        finally:
            writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            head, _ = await response(reader)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert await closed_within(reader, IDLE + MARGIN) == b""
        finally:
            writer.close()
    finally:
        await proc.stop()


async def test_liveroom_serve_takes_the_flags(make_server: Callable[..., LiveServer]) -> None:
    """The composition root (and uvloop, as in production): the flags set
    the timeouts of a ``liveroom serve`` process."""
    srv = make_server("--http-head-timeout", str(HEAD), "--http-body-timeout", str(BODY),
                      "--http-idle-timeout", str(IDLE))
    loop = asyncio.get_running_loop()
    for request, bound in ((b"GET /healthz HTTP/1.1\r\n", HEAD), (TOKEN_REQUEST, BODY)):
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(request)
        t0 = loop.time()
        try:
            assert await closed_within(reader, bound + MARGIN) == b""
            assert loop.time() - t0 >= bound * 0.9
        finally:
            writer.close()


async def test_each_pipelined_body_has_its_own_deadline(port: int) -> None:
    """A body's deadline runs from its own head: the second body of two
    pipelined requests, begun with the end of the first, may finish after
    the first head's deadline has passed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(TOKEN_REQUEST)
        await asyncio.sleep(BODY * 0.5)
        writer.write(TOKEN_BODY + TOKEN_REQUEST + TOKEN_BODY[:5])
        await asyncio.sleep(BODY * 0.7)  # past the first head's body deadline
        writer.write(TOKEN_BODY[5:])
        for _ in range(2):
            head, body = await response(reader)
            assert head.startswith(b"HTTP/1.1 200"), head + body
    finally:
        writer.close()
