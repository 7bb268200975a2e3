"""The one value rule (depth, size, what both encodings carry), checked at
decode, against a real ``liveroom serve``: a value that breaks it is refused
with its documented error, costs the server at most a bounded number of log
lines, and never hurts another room (issue 12, items 1 and 7).

Frames nested deeper than msgpack-python's packer allows are written by hand
(``nested_msgpack``): ``0x91`` is a one-element array.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import msgpack
import pytest

from edge.client import LiveroomClient
from tests.support import API_KEY, LiveServer, metric, nested, pack
from wire.codecs import JSON, MSGPACK
from wire.decode import MAX_VALUE_DEPTH
from wire.errors import ERROR_SPECS

T = 5.0  # bound on every wait for a frame
ROOMY = ("--action-rate", "500", "--action-burst", "500", "--peer-rate", "500",
         "--peer-burst", "500")

Connect = Callable[..., Any]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"




def nested_msgpack(frame: dict[str, Any], field: str, depth: int) -> bytes:
    """``frame`` with ``field`` set to 1 inside ``depth`` arrays, in msgpack
    (packed by hand: the packer refuses more than 511 levels)."""
    head = pack({**frame, field: "$"})
    marker = pack("$")
    assert head.count(marker) == 1
    return head.replace(marker, b"\x91" * depth + b"\x01")


def error_lines(srv: LiveServer, since: int) -> list[str]:
    """The server's ERROR and WARNING log lines (and traceback lines) since
    line ``since`` of its log."""
    lines = srv.child.log[since:]
    return [ln for ln in lines
            if re.search(r" (ERROR|WARNING|CRITICAL) ", ln) or ln.startswith(("Traceback", "  "))]


async def expect_error(c: LiveroomClient, code: str, *, field: str | None = None,
                       ref: Any = None) -> dict[str, Any]:
    frame = await c.expect("error", timeout=T)
    assert frame["code"] == code, frame
    assert frame["advice"] == ERROR_SPECS[code].advice, frame
    if field is not None:
        assert frame.get("field") == field, frame
    if ref is not None:
        assert frame.get("ref") == ref, frame
    return frame


async def assert_room_delivers(sender: LiveroomClient, receiver: LiveroomClient,
                               room: str) -> None:
    text = uid("still")
    await sender.action(room, "comment", {"text": text})
    while True:
        got = await receiver.expect("action", timeout=T, room=room)
        if got["body"] == {"text": text}:
            return


# --------------------------------------------------------------------------
# item 1: a deep value in one room must not freeze the others
# --------------------------------------------------------------------------
async def test_a_deep_action_in_one_room_does_not_freeze_other_rooms(
        make_server: Callable[..., LiveServer], http: aiohttp.ClientSession) -> None:
    srv = make_server(*ROOMY)
    room_a, room_b = uid("a"), uid("b")
    clients: list[LiveroomClient] = []

    async def connect(user: str, role: str = "viewer", codec: str = MSGPACK) -> LiveroomClient:
        c = await LiveroomClient.connect(srv.ws_url, srv.token(user, role), codec=codec,
                                         session=http)
        clients.append(c)
        return c

    try:
        attacker = await connect(uid("att"))
        # JSON members: the JSON encoder is the one that recursed.
        watcher_a = await connect(uid("wa"), codec=JSON)
        talker_b = await connect(uid("tb"))
        host_b = await connect(uid("hb"), "host")
        victim_b = await connect(uid("vb"), codec=JSON)
        for c, room in ((attacker, room_a), (watcher_a, room_a), (talker_b, room_b),
                        (host_b, room_b), (victim_b, room_b)):
            assert (await c.join(room))["type"] == "joined"
        deep = nested_msgpack({"type": "action", "room": room_a, "kind": "blob"}, "body", 980)
        # Rounds of traffic in both rooms, so that the deep action lands in a
        # coalescing tick (queued behind a comment) while room b has a tick
        # queued too: the state in which one room's failure froze the others.
        for i in range(10):
            await attacker.action(room_a, "comment", {"text": f"a{i}"})
            await attacker.send_raw(deep)
            await talker_b.action(room_b, "comment", {"text": f"b{i}-1"})
            await talker_b.action(room_b, "comment", {"text": f"b{i}-2"})
        # Room b still delivers: actions and state, pushed after the attack.
        await assert_room_delivers(talker_b, victim_b, room_b)
        await host_b.set_state(room_b, "score", {"n": 1})
        got = await victim_b.expect("state", timeout=T, section="score")
        assert got["value"] == {"n": 1}, got
        # Room a too; the attacker was told why, once per deep frame.
        await assert_room_delivers(watcher_a, attacker, room_a)
        await assert_room_delivers(attacker, watcher_a, room_a)
        async with http.get(f"{srv.url}/metrics") as r:
            text = await r.text()
        errs = re.search(r'liveroom_errors_total\{code="invalid_field"\} (\S+)', text)
        assert errs is not None and float(errs.group(1)) == 10, text
        assert "RecursionError" not in srv.logs()
    finally:
        for c in clients:
            await c.close()


# --------------------------------------------------------------------------
# the rule at decode: depth, size, both encodings, every field
# --------------------------------------------------------------------------
def _frame(kind: str, room: str) -> dict[str, Any]:
    """A frame of ``kind`` whose carried value is ``$``: the field named by
    ``_FIELD``."""
    return {
        "action": {"type": "action", "room": room, "kind": "blob", "body": "$"},
        "state": {"type": "state", "room": room, "section": "score", "value": "$"},
        "peer": {"type": "peer", "to": "nobody-x", "id": uid("m"), "body": "$"},
        "ping": {"type": "ping", "t": "$"},
    }[kind]


_FIELD = {"action": "body", "state": "value", "peer": "body", "ping": "t"}


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with LiveServer(tmp_path_factory.mktemp("data"), *ROOMY) as srv:
        yield srv


async def _pair(srv: LiveServer, http: aiohttp.ClientSession, room: str,
                codec: str = MSGPACK) -> tuple[LiveroomClient, LiveroomClient]:
    a = await LiveroomClient.connect(srv.ws_url, srv.token(uid("host"), "host"), codec=codec,
                                     session=http)
    b = await LiveroomClient.connect(srv.ws_url, srv.token(uid("by")), codec=JSON,
                                     session=http)
    for c in (a, b):
        assert (await c.join(room))["type"] == "joined"
    return a, b


@pytest.mark.parametrize("kind", ["action", "state", "peer", "ping"])
@pytest.mark.parametrize("codec", [MSGPACK, JSON])
async def test_depth_limit_is_exact_for_every_carried_field(
        roomy: LiveServer, http: aiohttp.ClientSession, kind: str, codec: str) -> None:
    """MAX_VALUE_DEPTH levels of containers pass (and come back intact);
    one more is ``invalid_field`` with ``field`` and ``limit``."""
    room = uid("r")
    a, b = await _pair(roomy, http, room, codec)
    try:
        field = _FIELD[kind]
        frame = _frame(kind, room)
        over = {**frame, field: nested(MAX_VALUE_DEPTH + 1), "ref": "deep"}
        await a.send(over)
        err = await expect_error(a, "invalid_field", field=field, ref="deep")
        assert err["limit"] == MAX_VALUE_DEPTH, err
        ok = {**frame, field: nested(MAX_VALUE_DEPTH), "ref": "ok"}
        await a.send(ok)
        if kind == "ping":
            pong = await a.expect("pong", timeout=T, ref="ok")
            assert pong["t"] == nested(MAX_VALUE_DEPTH)
        elif kind == "action":
            got = await b.expect("action", timeout=T, room=room)
            assert got["body"] == nested(MAX_VALUE_DEPTH)
        elif kind == "state":
            got = await b.expect("state", timeout=T, section="score")
            assert got["value"] == nested(MAX_VALUE_DEPTH)
        else:
            ack = await a.expect("peer_ack", timeout=T, ref="ok")
            assert ack["seq"] >= 1
        await assert_room_delivers(a, b, room)
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize(("raw", "field"), [
    pytest.param('{"type": "ping", "t": 1e999}', "t", id="json-float-overflow-is-infinity"),
    pytest.param('{"type": "ping", "t": "\\ud800"}', "t", id="json-lone-surrogate"),
    pytest.param('{"type": "ping", "t": {"\\udfff": 1}}', "t", id="json-lone-surrogate-key"),
    pytest.param('{"type": "ping", "t": 18446744073709551616}', "t", id="json-int-over-64-bits"),
    pytest.param('{"type": "ping", "t": 1, "x": [-9223372036854775809]}', "x",
                 id="json-unknown-field-too"),
    pytest.param(pack({"type": "ping", "t": b"\x00"}), "t", id="msgpack-bin"),
    pytest.param(pack({"type": "ping", "t": msgpack.ExtType(5, b"x")}), "t", id="msgpack-ext"),
    pytest.param(pack({"type": "ping", "t": {b"k": 1}}), "t", id="msgpack-bin-key"),
    pytest.param(pack({"type": "ping", "t": {1: 1}}), None, id="msgpack-int-key"),
])
async def test_values_one_encoding_cannot_carry_are_refused_at_decode(
        roomy: LiveServer, http: aiohttp.ClientSession, raw: bytes | str,
        field: str | None) -> None:
    room = uid("r")
    for codec in (MSGPACK, JSON):
        a, b = await _pair(roomy, http, room, codec)
        try:
            await a.send_raw(raw)
            if field is None:
                await expect_error(a, "bad_frame")
            else:
                await expect_error(a, "invalid_field", field=field)
            await assert_room_delivers(a, b, room)
        finally:
            await a.close()
            await b.close()


async def test_value_size_limit(make_server: Callable[..., LiveServer],
                                http: aiohttp.ClientSession) -> None:
    """``--max-value-bytes`` bounds every carried value (msgpack size)."""
    srv = make_server(*ROOMY, "--max-value-bytes", "1000")
    room = uid("r")
    a, b = await _pair(srv, http, room)
    try:
        await a.send({"type": "action", "room": room, "kind": "blob", "body": "x" * 1200,
                      "ref": "big"})
        err = await expect_error(a, "invalid_field", field="body", ref="big")
        assert err["limit"] == 1000, err
        await a.send({"type": "ping", "t": ["y" * 100] * 12, "ref": "bigt"})
        await expect_error(a, "invalid_field", field="t", ref="bigt")
        await a.action(room, "blob", "z" * 900)
        got = await b.expect("action", timeout=T, room=room)
        assert got["body"] == "z" * 900
        assert a.welcome is not None
        assert a.welcome["limits"]["max_value_bytes"] == 1000
        assert a.welcome["limits"]["max_value_depth"] == MAX_VALUE_DEPTH
    finally:
        await a.close()
        await b.close()


async def test_ref_one_encoding_cannot_carry_is_not_echoed(
        roomy: LiveServer, http: aiohttp.ClientSession) -> None:
    """A ``ref`` is echoed in the error; one the connection's codec cannot
    carry (an int over 64 bits in a JSON frame on a msgpack connection) is
    refused like any other field, never echoed, never an internal error."""
    room = uid("r")
    a, b = await _pair(roomy, http, room, MSGPACK)
    try:
        await a.send_raw('{"type": "bogus", "ref": 1180591620717411303424}')
        err = await expect_error(a, "invalid_field", field="ref")
        assert "ref" not in err
        await assert_room_delivers(a, b, room)
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("path", ["actions", "state/score"])
async def test_http_api_applies_the_same_rule(roomy: LiveServer, http: aiohttp.ClientSession,
                                              path: str) -> None:
    room = uid("r")
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    field = "body" if path == "actions" else "value"
    envelope = {"kind": "blob"} if path == "actions" else {}
    ok = 202 if path == "actions" else 200
    for depth, status in ((MAX_VALUE_DEPTH + 1, 400), (2000, 400), (MAX_VALUE_DEPTH, ok)):
        # Written by hand: json.dumps recurses, and 2000 levels is past its limit.
        data = json.dumps({**envelope, field: "$"}).replace(
            '"$"', "[" * depth + "1" + "]" * depth)
        async with http.post(f"{roomy.url}/v1/rooms/{room}/{path}", data=data,
                             headers=headers) as r:
            assert r.status == status, await r.text()
            if status == 400:
                body = await r.json()
                assert body["code"] in ("invalid_field", "bad_frame"), body
    async with http.post(f"{roomy.url}/v1/rooms/{room}/{path}",
                         data=json.dumps({**envelope, field: {"n": 1}}).replace("1", "1e999"),
                         headers=headers) as r:
        assert r.status == 400, await r.text()
        assert (await r.json())["field"] == field
    assert "Traceback" not in roomy.logs()


async def test_agents_http_api_deep_body_is_refused(roomy: LiveServer,
                                                   http: aiohttp.ClientSession) -> None:
    room = uid("r")
    headers = {"Authorization": f"Bearer {roomy.token(uid('u'))}",
               "Content-Type": "application/json"}
    before = len(roomy.child.log)
    async with http.post(f"{roomy.url}/v1/rooms/{room}/agents/nobody/interactions",
                         data="[" * 5000 + "]" * 5000, headers=headers) as r:
        assert r.status == 400, await r.text()
    assert not error_lines(roomy, before), error_lines(roomy, before)


# --------------------------------------------------------------------------
# item 7: what a client makes the server log is bounded
# --------------------------------------------------------------------------
async def test_uncarriable_ping_t_is_an_error_per_frame_and_bounded_log_lines(
        roomy: LiveServer, http: aiohttp.ClientSession) -> None:
    before = len(roomy.child.log)
    json_conn = await LiveroomClient.connect(roomy.ws_url, roomy.token(uid("j")), codec=JSON,
                                             session=http)
    mp_conn = await LiveroomClient.connect(roomy.ws_url, roomy.token(uid("m")), codec=MSGPACK,
                                           session=http)
    try:
        # JSON connection, msgpack frames: a bin ``t``, a nested ``t``.
        for i in range(20):
            await json_conn.send_raw(pack({"type": "ping", "t": b"\x00\x01", "ref": i}))
            await expect_error(json_conn, "invalid_field", field="t", ref=i)
        for i in range(20):
            await json_conn.send_raw(nested_msgpack({"type": "ping", "ref": i}, "t", 600))
            await expect_error(json_conn, "invalid_field", field="t", ref=i)
        # msgpack connection, JSON frames: an int msgpack cannot carry.
        for i in range(20):
            await mp_conn.send_raw(json.dumps({"type": "ping", "t": 2**70, "ref": i}))
            await expect_error(mp_conn, "invalid_field", field="t", ref=i)
        for c in (json_conn, mp_conn):
            await c.send({"type": "ping", "t": "fine", "ref": "ok"})
            assert (await c.expect("pong", timeout=T, ref="ok"))["t"] == "fine"
        lines = error_lines(roomy, before)
        assert len(lines) <= 10, "".join(lines)
        assert await metric(http, roomy.url, "liveroom_errors_total", code="internal") == 0
    finally:
        await json_conn.close()
        await mp_conn.close()


@pytest.mark.parametrize("codec", [MSGPACK, JSON])
async def test_the_rule_over_webtransport(roomy: LiveServer, http: aiohttp.ClientSession,
                                          codec: str) -> None:
    """The same rule on the QUIC edge: a deep action body is refused with its
    documented error, one at the limit reaches a WebSocket member."""
    room = uid("r")
    wt = await LiveroomClient.connect(roomy.wt_url, roomy.token(uid("wt")), codec=codec,
                                      cert_sha256=roomy.cert_sha256, timeout=T)
    ws = await LiveroomClient.connect(roomy.ws_url, roomy.token(uid("ws")), codec=JSON,
                                      session=http)
    try:
        for c in (wt, ws):
            assert (await c.join(room))["type"] == "joined"
        if codec == MSGPACK:
            await wt.send_raw(nested_msgpack(
                {"type": "action", "room": room, "kind": "blob", "ref": "deep"}, "body", 980))
        else:
            await wt.send({"type": "action", "room": room, "kind": "blob", "ref": "deep",
                           "body": nested(MAX_VALUE_DEPTH + 1)})
        err = await expect_error(wt, "invalid_field", field="body", ref="deep")
        assert err["limit"] == MAX_VALUE_DEPTH
        await wt.action(room, "blob", nested(MAX_VALUE_DEPTH))
        got = await ws.expect("action", timeout=T, room=room)
        assert got["body"] == nested(MAX_VALUE_DEPTH)
        await assert_room_delivers(ws, wt, room)
    finally:
        await wt.close()
        await ws.close()
