"""Connecting to Redis, standalone or Cluster, and the key scheme.

``open_redis(url)`` answers a redis-py asyncio client: ``redis://`` (or
``rediss://``) is one server, ``redis+cluster://`` (or ``cluster=True``) is a
Redis Cluster through redis-py's ``RedisCluster``, which discovers the other
nodes from the one named and follows MOVED/ASK redirections. hiredis is
installed with redis-py (the ``distributed`` extra), and redis-py uses it to
parse replies when present.

Replies are bytes (``decode_responses`` off): state values are msgpack.

Keys
----
Every key is ``lr:<kind>:{<tag>}...``: the part in braces is the Redis
Cluster hash tag, so all the keys one Lua script touches fall in one slot.
The tags are the room (state, online counts), the user (connections, rate
buckets) and the fixed ``nodes`` (the node registry). Redis takes the tag
from the first ``{`` to the first ``}`` after it; a room or user id that
itself holds a ``}`` cuts its tag short, but every key of that id is cut the
same way, so its keys still share one slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeAlias, cast
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from wire.errors import Unavailable

log = logging.getLogger(__name__)

# Either client: both take the same commands, scripts and pipelines for
# what the adapters here use (single-slot scripts, per-key commands).
RedisClient: TypeAlias = "Redis | RedisCluster"

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def open_redis(url: str, *, cluster: bool | None = None, **options: Any) -> RedisClient:
    """A client for ``url``. ``cluster`` None: decided by the scheme.
    Extra keyword arguments go to redis-py (timeouts, pool sizes)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in CLUSTER_SCHEMES:
        cluster = True if cluster is None else cluster
        parts = parts._replace(scheme=CLUSTER_SCHEMES[scheme])
    elif scheme not in ("redis", "rediss"):
        raise ValueError(f"not a Redis URL: {url!r} (redis://, rediss:// or redis+cluster://)")
    plain = urlunsplit(parts)
    options.setdefault("decode_responses", False)
    # A hung server must not hang a caller forever; the callers add their
    # own deadlines where they need tighter ones.
    options.setdefault("socket_timeout", 5.0)
    options.setdefault("socket_connect_timeout", 5.0)
    if cluster:
        # A Cluster has no databases: drop the path redis-py would refuse.
        plain = urlunsplit(parts._replace(path=""))
        cluster_client: RedisCluster = RedisCluster.from_url(plain, **options)
        return cluster_client
    standalone: Redis = Redis.from_url(plain, **options)
    return standalone


def register_script(client: RedisClient, source: str) -> AsyncScript:
    """``client.register_script(source)`` for either client (redis-py's
    stubs type it for the standalone client only; the Cluster client routes
    EVALSHA by its keys and loads a script on every master)."""
    registered: AsyncScript = cast(Any, client).register_script(source)
    return registered


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, RedisCluster)


def room_key(kind: str, room: str, part: str = "") -> str:
    """A key of ``room``: ``lr:<kind>:{<room>}`` plus ``:<part>``."""
    return f"lr:{kind}:{{{room}}}:{part}" if part else f"lr:{kind}:{{{room}}}"


def user_key(kind: str, user: str) -> str:
    return f"lr:{kind}:{{u:{user}}}"


def nodes_key(part: str) -> str:
    return f"lr:{{nodes}}:{part}"


# Redis is down, restarting, loading, or a Cluster is re-forming: the caller
# may retry later. Programming errors (ResponseError from a script) are not
# in this list.
_OUTAGES = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ClusterDownError,
            TryAgainError, RedisClusterException, OSError)


@contextmanager
def unavailable_when_down(what: str) -> Iterator[None]:
    """Turn Redis outages into ``Unavailable`` (a server error the client
    may retry) inside the ``with``. A write cut off this way may or may not
    have been applied."""
    try:
        yield
    except _OUTAGES as err:
        log.warning("%s: Redis is unavailable: %s", what, err)
        raise Unavailable(f"the {what} is unavailable; retry later") from err


# Script calls per round of ``run_script_many``: pipelined on a standalone
# server; concurrent on a Cluster, where each call in flight holds a
# connection of its own (so fewer per round).
SCRIPT_BATCH = 200
CLUSTER_SCRIPT_BATCH = 32


async def run_script_many(client: RedisClient, script: AsyncScript,
                          calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
    """Run ``script`` once per (keys, args) in ``calls``; the replies in
    order. On a standalone server: pipelined EVALSHA, ``SCRIPT_BATCH`` per
    round trip (a server that restarted and forgot the script gets it loaded
    and the round again). redis-py's Cluster pipeline refuses scripts, so on
    a Cluster the calls go ``CLUSTER_SCRIPT_BATCH`` at a time, concurrently,
    over the client's per-node connections instead."""
    out: list[Any] = []
    if is_cluster(client):
        for i in range(0, len(calls), CLUSTER_SCRIPT_BATCH):
            out += await asyncio.gather(*(script(keys=list(k), args=list(a))
                                          for k, a in calls[i:i + CLUSTER_SCRIPT_BATCH]))
        return out
    for i in range(0, len(calls), SCRIPT_BATCH):
        batch = calls[i:i + SCRIPT_BATCH]
        for attempt in (1, 2):
            pipe = client.pipeline(transaction=False)
            for keys, args in batch:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            try:
                out += await pipe.execute()
                break
            except NoScriptError:
                if attempt == 2:
                    raise
                script.sha = await client.script_load(script.script)
    return out
