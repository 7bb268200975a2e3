"""Connections per user: a token is not a licence to hold thousands of
sockets on an edge (each costs memory and a descriptor). Past
``--max-conns-per-user`` the hello is answered ``too_many_connections`` and
the connection closed 4004; a slot frees when one of the user's connections
ends; racing hellos cannot all pass the cap; other users are unaffected."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from edge.client import ClosedError, LiveroomClient
from tests.support import LiveServer

CAP = 3


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def refused(srv: LiveServer, token: str, http: aiohttp.ClientSession) -> dict[str, Any]:
    """The error a hello got and the close code that followed it."""
    c = await LiveroomClient.open(srv.ws_url, session=http)
    try:
        await c.send({"type": "hello", "token": token, "v": 1, "ref": "h"})
        err = await c.recv(5)
        with pytest.raises(ClosedError) as closed:
            await c.recv(5)
        return {**err, "close": closed.value.code}
    finally:
        await c.close()


async def test_past_the_cap_a_hello_is_refused_and_a_freed_slot_is_reusable(
        make_server: Callable[..., LiveServer], http: aiohttp.ClientSession) -> None:
    srv = make_server("--max-conns-per-user", str(CAP))
    user = uid("many")
    held = [await LiveroomClient.connect(srv.ws_url, srv.token(user), session=http)
            for _ in range(CAP)]
    try:
        err = await refused(srv, srv.token(user), http)
        assert (err["type"], err["code"], err["limit"], err["ref"], err["close"]) == \
            ("error", "too_many_connections", CAP, "h", 4004), err
        # Another user is not affected.
        other = await LiveroomClient.connect(srv.ws_url, srv.token(uid("other")), session=http)
        await other.close()
        # The refused connection took no slot; a closed one gives its slot back.
        await held.pop().close()
        for _ in range(50):
            try:
                held.append(await LiveroomClient.connect(srv.ws_url, srv.token(user),
                                                         session=http))
                break
            except ClosedError:
                await asyncio.sleep(0.05)  # the server has not seen the close yet
        assert len(held) == CAP
    finally:
        for c in held:
            await c.close()


async def test_racing_hellos_of_one_user_cannot_pass_the_cap(
        make_server: Callable[..., LiveServer], http: aiohttp.ClientSession) -> None:
    srv = make_server("--max-conns-per-user", str(CAP))
    token = srv.token(uid("race"))
    results = await asyncio.gather(
        *(LiveroomClient.connect(srv.ws_url, token, session=http) for _ in range(12)),
        return_exceptions=True)
    ok = [r for r in results if isinstance(r, LiveroomClient)]
    try:
        assert len(ok) == CAP, results
        assert all(isinstance(r, ClosedError) for r in results if r not in ok)
    finally:
        for c in ok:
            await c.close()


async def test_a_character_holds_a_connection_per_seated_room_past_the_user_cap(
        make_server: Callable[..., LiveServer], http: aiohttp.ClientSession) -> None:
    """A character (role agent) is seated in many rooms, one connection each:
    its bound is --max-conns-per-agent, not the viewers' --max-conns-per-user."""
    srv = make_server("--max-conns-per-user", str(CAP), "--max-conns-per-agent", "6")
    bot = uid("bot")
    held = [await LiveroomClient.connect(srv.ws_url, srv.token(bot, "agent"), session=http)
            for _ in range(6)]
    try:
        for i, c in enumerate(held):
            assert (await c.join(f"seat-{i}"))["type"] == "joined"
        err = await refused(srv, srv.token(bot, "agent"), http)
        assert (err["code"], err["limit"], err["close"]) == ("too_many_connections", 6, 4004)
        viewer = uid("viewer")  # the viewers' cap is unchanged
        mine = [await LiveroomClient.connect(srv.ws_url, srv.token(viewer), session=http)
                for _ in range(CAP)]
        assert (await refused(srv, srv.token(viewer), http))["limit"] == CAP
        for c in mine:
            await c.close()
    finally:
        for c in held:
            await c.close()
