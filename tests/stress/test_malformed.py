"""Malformed protocol on both transports, while a canary room keeps delivering.

Over a WebSocket and over WebTransport (the QUIC edge), a few authenticated
connections (hosts, joined to a room) send every kind of bad payload, in
msgpack and JSON: undecodable, truncated, trailing bytes, not a map, no or a
bad ``type``, wrong field types, values nested past the depth limit and past
the parser, too big for a frame, integers past 64 bits, NaN, lone
surrogates, msgpack bin and ext values, claims of huge containers. Each must
get its documented ``error`` code (and ``field``/``limit``), the connection
staying open (a ping after each payload fences its answer). Then fresh
connections break the transport itself (reserved opcodes and bits, unmasked
frames, fragmented or oversized control frames, orphan continuations, too
many fragments, invalid UTF-8, headers over the hard limit; on WebTransport
length prefixes with the top bit set or over the hard limit, frames cut off
by the end of the stream): each must end with its documented close code.

A JSON member of the offenders' room must receive nothing of it. Meanwhile
the canary (loadtest/fuzz/canary.py ``Canary``: a WebSocket host sends an action
and a state change every 100 ms to a WebTransport viewer in a room of their
own) must lose nothing, reorder nothing, see nothing foreign and never be
2 s late, and the server must stay up.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import msgpack
import pytest

from edge.client import ClosedError, LiveroomClient
from edge.wt_client import WtConnection
from loadtest.fuzz.canary import Canary
from loadtest.raw_ws import OP_BINARY, OP_CONT, OP_PING, OP_TEXT, RawWebSocket, frame
from tests.stress.conftest import Figures
from tests.support import LiveServer, until
from wire.codecs import JSON
from wire.webtransport import wt_frame

pytestmark = [pytest.mark.stress, pytest.mark.timeout(120)]

T = 5.0  # bound on every wait for a reply or a close
LIMIT = 65536  # max_frame_bytes (default)
ROOM = "bad-input"
OFFENDERS = 4  # connections sending bad payloads at once
ROUNDS = 3  # times each sends every payload, each with a ping (under the frame burst of 400)
CANARY_MIN = 30  # canary messages at least (3 s at 100 ms)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def nested(levels: int) -> Any:
    v: Any = 1
    for _ in range(levels):
        v = [v]
    return v


def action(body: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "action", "room": ROOM, "kind": "x.y", "body": body, "ref": 7, **extra}


# (id, payload: bytes is msgpack, str is JSON; the error code; fields the error must carry)
PAYLOADS: list[tuple[str, bytes | str, str, dict[str, Any]]] = [
    ("reserved_byte", b"\xc1", "bad_frame", {}),
    ("truncated_map", b"\x82\xa4type", "bad_frame", {}),
    ("truncated_str", b"\xa5ab", "bad_frame", {}),
    ("trailing_bytes", pack({"type": "ping"}) + b"\x01", "bad_frame", {}),
    ("empty", b"", "bad_frame", {}),
    ("not_a_map", pack([1, 2, 3]), "bad_frame", {}),
    ("huge_array_claim", b"\xdd\xff\xff\xff\xff", "bad_frame", {}),
    ("huge_str_claim", b"\x81\xa4type\xdb\xff\xff\xff\xff", "bad_frame", {}),
    ("int_key", b"\x81\x01\xa4ping", "bad_frame", {}),
    ("invalid_utf8_str", b"\x81\xa4type\xa2\xff\xfe", "bad_frame", {}),
    ("past_the_parser", b"\x82\xa4type\xa4ping\xa1t" + b"\x91" * 30_000 + b"\x01",
     "bad_frame", {}),
    ("no_type", pack({"room": ROOM, "ref": 7}), "missing_field", {"ref": 7}),
    ("unknown_type", pack({"type": "dance", "ref": 7}), "unknown_type", {"ref": 7}),
    ("type_not_a_string", pack({"type": 5, "ref": 7}), "unknown_type", {"ref": 7}),
    ("server_frame_type", pack({"type": "welcome", "ref": 7}), "unknown_type", {"ref": 7}),
    ("bin_value", pack(action(b"\x00\x01")), "invalid_field", {"field": "body", "ref": 7}),
    ("ext_value", pack(action(msgpack.ExtType(5, b"x"))), "invalid_field", {"field": "body"}),
    ("deep_body", pack(action(nested(33))), "invalid_field",
     {"field": "body", "limit": 32, "ref": 7}),
    ("deep_body_980", pack(action(nested(980))), "invalid_field",
     {"field": "body", "limit": 32, "ref": 7}),
    ("deep_state_value", pack({"type": "state", "room": ROOM, "section": "s1",
                               "value": {"a": nested(40)}}), "invalid_field", {"field": "value"}),
    ("deep_ping_t", pack({"type": "ping", "t": nested(33)}), "invalid_field",
     {"field": "t", "limit": 32}),
    ("deep_peer_body", pack({"type": "peer", "to": "bob", "id": "m1", "body": nested(200)}),
     "invalid_field", {"field": "body"}),
    ("frame_too_large", pack({"type": "ping", "t": "x" * (LIMIT + 10)}), "frame_too_large",
     {"limit": LIMIT}),
    ("room_not_a_string", pack({"type": "join", "room": 5}), "invalid_field", {"field": "room"}),
    ("room_too_long", pack({"type": "join", "room": "r" * 65}), "invalid_field",
     {"field": "room"}),
    ("known_not_a_map", pack({"type": "join", "room": ROOM, "known": [1]}), "invalid_field",
     {"field": "known"}),
    ("epoch_too_long", pack({"type": "sync", "room": ROOM, "epoch": "e" * 65}),
     "invalid_field", {"field": "epoch"}),
    ("kind_a_list", pack({"type": "action", "room": ROOM, "kind": [1]}), "invalid_field",
     {"field": "kind"}),
    ("comment_too_long", pack({"type": "action", "room": ROOM, "kind": "comment",
                               "body": {"text": "c" * 501}}), "invalid_field", {"field": "body"}),
    ("expect_a_string", pack({"type": "state", "room": ROOM, "section": "s1", "value": 1,
                              "expect": "x"}), "invalid_field", {"field": "expect"}),
    ("bad_section", pack({"type": "state", "room": ROOM, "section": "Bad!", "value": 1}),
     "invalid_field", {"field": "section"}),
    ("peer_without_body", pack({"type": "peer", "to": "bob", "id": "m2"}), "missing_field",
     {"field": "body"}),
    ("peer_ack_negative", pack({"type": "peer_ack", "upto": -1}), "invalid_field",
     {"field": "upto"}),
    ("not_joined", pack({"type": "action", "room": "elsewhere", "kind": "like", "ref": 7}),
     "not_joined", {"ref": 7}),
    ("hello_again", pack({"type": "hello", "token": "x", "v": 1}), "already_authenticated", {}),
    ("json_garbage", "{nope", "bad_frame", {}),
    ("json_truncated", '{"type": "ping"', "bad_frame", {}),
    ("json_trailing", '{"type": "ping"} x', "bad_frame", {}),
    ("json_nan", '{"type": "ping", "t": NaN}', "bad_frame", {}),
    ("json_single_quotes", "{'type': 'ping'}", "bad_frame", {}),
    ("json_past_the_parser", '{"type": "ping", "t": ' + "[" * 30_000 + "]" * 30_000 + "}",
     "bad_frame", {}),
    ("json_deep", '{"type": "ping", "ref": 7, "t": ' + "[" * 33 + "]" * 33 + "}",
     "invalid_field", {"field": "t", "limit": 32, "ref": 7}),
    ("json_int_past_64_bits", json.dumps(action(2**70)), "invalid_field", {"field": "body"}),
    ("json_lone_surrogate", json.dumps(action("\ud800")), "invalid_field", {"field": "body"}),
    ("json_null_type", '{"type": null, "ref": 7}', "missing_field", {"ref": 7}),
    ("json_too_large", json.dumps({"type": "ping", "t": "x" * LIMIT}), "frame_too_large",
     {"limit": LIMIT}),
]

# (id, bytes that break the WebSocket framing, the close code: ws_framing.py)
WS_VIOLATIONS: list[tuple[str, bytes, int]] = [
    ("reserved_opcode", frame(b"x", 0x3), 1002),
    ("reserved_control_opcode", frame(b"", 0xB), 1002),
    ("reserved_bit", frame(pack({"type": "ping"}), OP_BINARY, rsv=4), 1002),
    ("unmasked", frame(b'{"type": "ping"}', OP_TEXT, masked=False), 1002),
    ("fragmented_control", frame(b"", OP_PING, fin=False), 1002),
    ("control_over_125_bytes", frame(b"p" * 126, OP_PING), 1002),
    ("orphan_continuation", frame(b"x", OP_CONT), 1002),
    ("message_inside_message", frame(b"a", OP_TEXT, fin=False) + frame(b"b", OP_TEXT), 1002),
    ("invalid_utf8_text", frame(b'{"type": "ping", "t": "\xff"}', OP_TEXT), 1007),
    ("header_over_hard_limit", frame(b"", OP_BINARY, length=4 * LIMIT + 1), 1009),
    ("too_many_fragments", frame(b"", OP_BINARY, fin=False) +
     frame(b"", OP_CONT, fin=False) * 1100, 1009),
]

# (id, raw stream bytes, end the stream after them, the close code or None: just ended)
WT_VIOLATIONS: list[tuple[str, bytes, bool, int | None]] = [
    ("top_bit_length", bytes((0x80, 0, 0, 5)) + b"hello", False, 1009),
    ("length_over_hard_limit", (4 * LIMIT + 1).to_bytes(4, "big"), False, 1009),
    ("max_length", b"\xff\xff\xff\xff", False, 1009),
    ("cut_off_by_fin", wt_frame(pack({"type": "ping"}))[:-2], True, None),
    ("length_claims_more_then_fin", (500).to_bytes(4, "big") + b"{}", True, None),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # The canary sends 10 actions a second (the default limit is 5).
    with LiveServer(tmp_path_factory.mktemp("data"), "--action-rate", "50",
                    "--action-burst", "100") as srv:
        yield srv


@pytest.fixture
async def canary(server: LiveServer) -> AsyncIterator[Canary]:
    sender = await LiveroomClient.connect(server.ws_url, server.token("canary-host", "host"))
    receiver = await LiveroomClient.connect(server.wt_url, server.token("canary-viewer"),
                                            codec=JSON, cert_sha256=server.cert_sha256)
    c = Canary(sender, receiver, f"canary-{uuid.uuid4().hex[:8]}")
    await c.start()
    yield c
    await sender.close()
    await receiver.close()


class Side:
    """One connection of either transport, as the test needs it."""

    def __init__(self, ws: RawWebSocket | None = None, wt: LiveroomClient | None = None) -> None:
        self.ws, self.wt = ws, wt
        self.pending: deque[dict[str, Any]] = deque()  # the rest of a batch

    @classmethod
    async def open(cls, srv: LiveServer, transport: str, user: str) -> Side:
        token = srv.token(user, "host")
        if transport == "ws":
            ws = await RawWebSocket.connect("127.0.0.1", srv.port)
            side = cls(ws=ws)
        else:
            side = cls(wt=await LiveroomClient.open(srv.wt_url, cert_sha256=srv.cert_sha256))
        await side.send(pack({"type": "hello", "token": token, "v": 1}))
        assert (await side.recv())["type"] == "welcome"
        await side.send(pack({"type": "join", "room": ROOM}))
        assert (await side.recv())["type"] == "joined"
        return side

    async def send(self, payload: bytes | str) -> None:
        if self.ws is not None:
            self.ws.send(payload)
            await self.ws.drain()
        else:
            assert self.wt is not None
            data = payload.encode() if isinstance(payload, str) else payload
            await self.wt.ws.send_bytes(data)

    async def answers(self, payload: bytes | str, fence: str) -> list[dict[str, Any]]:
        """What ``payload`` is answered with: every frame before the pong of
        a ping sent right after it."""
        await self.send(payload)
        await self.send(pack({"type": "ping", "ref": fence}))
        got = []
        while (f := await self.recv())["type"] != "pong" or f.get("ref") != fence:
            got.append(f)
        return got

    async def send_raw(self, raw: bytes, end: bool = False) -> None:
        if self.ws is not None:
            self.ws.send_raw(raw)
            if end:
                self.ws.writer.write_eof()
        else:
            assert self.wt is not None and isinstance(self.wt.ws, WtConnection)
            self.wt.ws.send_stream(raw, end=end)

    async def recv(self) -> dict[str, Any]:
        """The next frame (an online count skipped)."""
        while True:
            if self.pending:
                f = self.pending.popleft()
            elif self.ws is not None:
                frames = await self.ws.messages(T)
                if not frames:
                    raise ClosedError(self.ws.close_code, self.ws.close_reason)
                f = frames[0]
                self.pending.extend(frames[1:])
            else:
                assert self.wt is not None
                f = await self.wt.recv(T)
            if f["type"] != "online":
                return f

    async def close_code(self) -> int | None:
        """Read to the end: the close code (1006: the socket just ended;
        None: a WebTransport session ended with no close capsule)."""
        async with asyncio.timeout(T):
            while True:
                try:
                    await self.recv()
                except ClosedError as exc:
                    return exc.code

    async def close(self) -> None:
        if self.ws is not None:
            self.ws.abort()
        if self.wt is not None:
            await self.wt.close()


async def alive(srv: LiveServer) -> None:
    assert srv.proc is not None and srv.proc.poll() is None, srv.logs()[-2000:]
    async with aiohttp.ClientSession() as http, http.get(f"{srv.url}/healthz") as r:
        assert r.status == 200


@pytest.mark.parametrize("transport", ["ws", "wt"])
async def test_malformed_protocol_gets_documented_errors_and_closes(
        server: LiveServer, canary: Canary, transport: str, figures: Figures) -> None:
    # A member of the offenders' room over JSON: what reaches it must be
    # encodable for it, and nothing bad may reach it at all.
    bystander = await LiveroomClient.connect(server.ws_url, server.token(f"by-{transport}"),
                                             codec=JSON)
    assert (await bystander.join(ROOM))["type"] == "joined"
    seen: Counter[str] = Counter()

    async def watch() -> None:
        while True:
            seen[(await bystander.recv(3600))["type"]] += 1
    watching = asyncio.create_task(watch())

    # Bad payloads: a few connections at once, each sending every payload a
    # few times over; each answered by its error; the connections stay usable.
    wrong: list[str] = []

    async def offender(n: int) -> None:
        side = await Side.open(server, transport, f"bad-{transport}-{n}")
        try:
            for r in range(ROUNDS):
                for i, (name, payload, code, fields) in enumerate(PAYLOADS):
                    got = await side.answers(payload, f"fence-{r}-{i}")
                    if len(got) != 1 or got[0]["type"] != "error" or got[0]["code"] != code \
                            or {k: got[0].get(k) for k in fields} != fields:
                        brief = [{k: f.get(k) for k in ("type", "code", "field", "limit", "ref")}
                                 for f in got]
                        wrong.append(f"{name}: {brief}")
            await side.send(pack({"type": "ping", "t": 1, "ref": "last"}))
            pong = await side.recv()
            assert pong["type"] == "pong" and pong["ref"] == "last", pong
        finally:
            await side.close()

    await asyncio.gather(*(offender(n) for n in range(OFFENDERS)))
    assert not wrong, "\n".join(wrong[:20])

    # Transport violations: each on a connection of its own, each closed.
    closes: Counter[str] = Counter()
    if transport == "ws":
        for name, raw, code in WS_VIOLATIONS:
            side = await Side.open(server, transport, f"bad-{transport}-{name}")
            try:
                await side.send_raw(raw)
                got_code = await side.close_code()
            finally:
                await side.close()
            closes[str(got_code)] += 1
            if got_code != code:
                wrong.append(f"{name}: closed {got_code}, not {code}")
        # A frame cut off by the end of the socket: the server just drops it.
        side = await Side.open(server, transport, "bad-ws-cut")
        await side.send_raw(frame(b"x" * 100, OP_BINARY)[:50], end=True)
        closes[str(await side.close_code())] += 1
        await side.close()
    else:
        for name, raw, end, wt_code in WT_VIOLATIONS:
            side = await Side.open(server, transport, f"bad-{transport}-{name}")
            try:
                await side.send_raw(raw, end=end)
                got_code = await side.close_code()
            finally:
                await side.close()
            closes[str(got_code)] += 1
            if got_code != wt_code:
                wrong.append(f"{name}: closed {got_code}, not {wt_code}")
    assert not wrong, "\n".join(wrong)

    await alive(server)
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    await bystander.close()
    assert not seen.keys() - {"online"}, f"delivered to the offenders' room: {seen}"
    await until(lambda: len(canary.sent_at) >= CANARY_MIN, 30, "the canary's messages")
    summary = await canary.stop()
    figures(transport=transport, bad_payloads=OFFENDERS * ROUNDS * len(PAYLOADS),
            kinds_of_payload=len(PAYLOADS), closes=dict(closes),
            canary={k: summary[k] for k in ("sent", "lost", "reordered", "late_checks",
                                            "latency_ms")})
    assert not summary["failures"], summary
    assert summary["sent"] > 0 and summary["lost"] == 0



@pytest.mark.parametrize("transport", ["ws", "wt"])
@pytest.mark.parametrize("first", [b"\xc1", b"\x81\x01\xa4ping", "{nope"],
                         ids=["reserved_byte", "int_key", "json_garbage"])
async def test_an_undecodable_first_frame_gets_bad_frame(server: LiveServer, transport: str,
                                                         first: bytes | str) -> None:
    """Before anything decoded the server answers in JSON (PROTOCOL.md,
    "Transport and encoding"), on the connection's own framing: over
    WebTransport a length-prefixed frame on the stream, like any other."""
    if transport == "ws":
        ws = await RawWebSocket.connect("127.0.0.1", server.port)
        side = Side(ws=ws)
    else:
        side = Side(wt=await LiveroomClient.open(server.wt_url, cert_sha256=server.cert_sha256))
    try:
        await side.send(first)
        err = await side.recv()
        assert err["type"] == "error" and err["code"] == "bad_frame", err
        await side.send(pack({"type": "hello", "token": server.token("late-hello"), "v": 1}))
        assert (await side.recv())["type"] == "welcome"
    finally:
        await side.close()
