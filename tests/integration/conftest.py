"""Integration fixtures: real servers on ephemeral loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import pytest

from edge.client import LiveroomClient
from storage.redis_conn import RedisClient, open_redis
from tests.llm_recorder import RecordingProxy
from tests.llm_server import LlamaServer
from tests.pgserver import PgServer
from tests.redisserver import RedisClusterServers, RedisServer
from tests.support import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One shared server for a test module, with roomy defaults."""
    with LiveServer(tmp_path_factory.mktemp("data"), "--action-burst", "200",
                    "--action-rate", "200", "--peer-burst", "200", "--peer-rate", "200") as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def connect(http: aiohttp.ClientSession) -> AsyncIterator[Callable[..., object]]:
    """``await connect(server, user, role=..., codec=...)`` -> a client after
    hello; every client is closed at the end of the test."""
    clients: list[LiveroomClient] = []

    async def _connect(srv: LiveServer, user: str, role: str = "viewer",
                       codec: str = "msgpack") -> LiveroomClient:
        c = await LiveroomClient.connect(srv.ws_url, srv.token(user, role), codec=codec,
                                         session=http)
        clients.append(c)
        return c

    yield _connect
    for c in clients:
        if not c.ws.closed:
            await c.close()


# --------------------------------------------------------------------------
# Redis (tests/redisserver.py): one standalone server and one 3-master
# Cluster for the whole session. Tests share them by using keys of their own
# (fresh room and user ids); a test that restarts Redis starts its own.
# --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers() as cluster:
        yield cluster


@pytest.fixture(params=["standalone", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs against a standalone Redis and a Cluster."""
    if request.param == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return str(request.getfixturevalue("redis_server").url)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[RedisClient]:
    client = open_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def dsn(pg: PgServer) -> str:
    """A new, empty database on the session's PostgreSQL (tests/conftest.py)."""
    return await pg.create_database()


# --------------------------------------------------------------------------
# A real OpenAI-compatible model server (tests/llm_server.py: llama.cpp's
# server over the embedded SmolLM2), one for the session: loading the model
# is the slow part. A test that stops or kills a server starts its own.
# --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def llama() -> Iterator[LlamaServer]:
    srv = LlamaServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
async def proxy(llama: LlamaServer) -> AsyncIterator[RecordingProxy]:
    """The session's model server behind a proxy that records each request."""
    p = await RecordingProxy(llama.base_url).start()
    yield p
    await p.stop()
