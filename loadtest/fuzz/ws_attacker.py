"""The WebSocket attacker: raw sockets (loadtest/raw_ws.py), each connection
a valid ``hello`` (or, now and then, a mutated one) with a viewer or host
token, then a few hundred frames, mostly mutated (loadtest/fuzz/payloads.py),
in msgpack (binary) or JSON (text); and now and then a transport attack that
ends the connection (``ws_attack``)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from urllib.parse import urlsplit

import msgpack

from loadtest.fuzz.attack import Fuzz
from loadtest.fuzz.payloads import (
    MAX_FRAME,
    ROOMS,
    USERS,
    encode,
    moderate_frame,
    mutate,
    payload,
    valid_frame,
)
from loadtest.raw_ws import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, RawWebSocket, frame
from wire.codecs import JSON, MSGPACK


def ws_attack(rng: random.Random) -> tuple[str, bytes]:
    """A WebSocket protocol violation (the server ends the connection)."""
    attacks: list[tuple[str, Callable[[], bytes]]] = [
        ("reserved_opcode", lambda: frame(b"x", rng.choice([3, 4, 5, 6, 7, 0xB, 0xF]))),
        ("reserved_bit", lambda: frame(msgpack.packb({"type": "ping"}), OP_BINARY,
                                       rsv=rng.randrange(1, 8))),
        ("unmasked", lambda: frame(b'{"type":"ping"}', OP_TEXT, masked=False)),
        ("fragmented_control", lambda: frame(b"", OP_PING, fin=False)),
        ("big_control", lambda: frame(b"p" * 126, OP_PING)),
        ("orphan_continuation", lambda: frame(b"x", OP_CONT)),
        ("message_inside_message", lambda: frame(b"a", OP_TEXT, fin=False) +
         frame(b"b", OP_TEXT)),
        ("many_fragments", lambda: frame(b"", OP_BINARY, fin=False) +
         frame(b"", OP_CONT, fin=False) * 1100),
        ("invalid_utf8", lambda: frame(b'{"type":"ping","t":"\xff\xfe"}', OP_TEXT)),
        ("over_hard_limit", lambda: frame(b"", OP_BINARY, length=4 * MAX_FRAME + 1)),
        ("cut_off", lambda: frame(b"x" * 100, OP_BINARY)[:50]),
        ("close_bad_code", lambda: frame(b"\x03\xe7junk" + b"\xff", OP_CLOSE)),
    ]
    name, make = rng.choice(attacks)
    return name, make()


async def ws_worker(fz: Fuzz, index: int) -> None:
    rng = random.Random(f"{fz.args.seed}/ws/{index}")
    host, port = urlsplit(fz.server.url).hostname or "127.0.0.1", urlsplit(fz.server.url).port
    assert port is not None
    while not fz.stop.is_set():
        codec = rng.choice([MSGPACK, JSON])
        key = f"ws/{codec}"
        profile = fz.profile(rng)
        fz.stats.tokens[profile] += 1
        token = await fz.token(rng.choice(USERS), profile)
        try:
            ws = await RawWebSocket.connect(host, port, timeout=10)
        except (OSError, TimeoutError) as exc:
            fz.stats.fail(f"ws: cannot connect: {exc!r}")
            await asyncio.sleep(1)
            continue
        fz.stats.connections["ws"] += 1
        reader = asyncio.create_task(_read_ws(fz, ws))
        try:
            hello = valid_frame(rng, hello_token=token)
            send = encode(mutate(rng, hello) if rng.random() < 0.05 else hello, codec)
            _ws_send(ws, codec, send)
            joined = rng.sample(ROOMS, rng.randrange(1, 4))
            for room in joined:
                _ws_send(ws, codec, encode({"type": "join", "room": room}, codec))
            if fz.canary_room and rng.random() < 0.03:
                await moderate_canary(fz, rng, ws, codec)
            for _ in range(rng.randrange(20, 400)):
                if fz.stop.is_set() or ws.close_code is not None:
                    break
                pick = rng.random()
                if pick < 0.01:
                    name, raw = ws_attack(rng)
                    fz.stats.attacks[f"ws/{name}"] += 1
                    ws.send_raw(raw)
                    break
                if pick > 0.98:
                    for f in fz.burst(rng, joined):
                        _ws_send(ws, codec, encode(f, codec))
                        fz.stats.frames[key] += 1
                f = fz.frame(rng, joined)
                if pick < 0.8:
                    f = mutate(rng, f)
                _ws_send(ws, codec, payload(rng, codec, f))
                fz.stats.frames[key] += 1
                await ws.drain()
                await fz.pause(rng)
            if ws.close_code is None and rng.random() < 0.5:
                ws.send_raw(frame(b"\x03\xe8", OP_CLOSE))  # the reader sees the answer
            await asyncio.wait([reader], timeout=3)
        finally:
            ws.abort()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def moderate_canary(fz: Fuzz, rng: random.Random, ws: RawWebSocket, codec: str) -> None:
    """Try to moderate the canary: join its room (as a viewer there: no
    fuzz token holds a grant for it) and ban, mute, kick the canary's users
    and retract its actions, and the same in a fuzz room the token may
    moderate. Each must be refused (or, in the fuzz room, touch only that
    room): a ``moderated`` or ``retract`` in the canary's room is a failure
    (``Fuzz.count_frame``), and the canary counts anything it loses. Only
    ``join``, ``moderate`` and ``leave`` go to the canary's room: an action
    there would be a foreign action for the canary."""
    fz.stats.attacks["ws/moderate_canary"] += 1
    room = fz.canary_room
    users = list(fz.canary_users)
    _ws_send(ws, codec, encode({"type": "join", "room": room}, codec))
    await asyncio.sleep(0.25)  # the canary's next actions, and their ids
    for _ in range(rng.randrange(3, 12)):
        target = room if rng.random() < 0.7 else rng.choice(ROOMS)
        # A retract names one of the canary's own actions when one was seen.
        f = moderate_frame(rng, target, users=users,
                           action_ids=list(fz.action_ids.get(room, ())))
        _ws_send(ws, codec, encode(f, codec))
        fz.stats.frames[f"ws/{codec}"] += 1
        await ws.drain()
        await fz.pause(rng)
    _ws_send(ws, codec, encode({"type": "leave", "room": room}, codec))


def _ws_send(ws: RawWebSocket, codec: str, data: bytes) -> None:
    ws.send_raw(frame(data, OP_BINARY if codec == MSGPACK else OP_TEXT))


async def _read_ws(fz: Fuzz, ws: RawWebSocket) -> None:
    while True:
        try:
            frames = await ws.messages()
        except (ValueError, msgpack.UnpackException) as exc:
            fz.stats.fail(f"ws: the server sent a frame that does not decode: {exc!r}")
            return
        if not frames:
            fz.count_close("ws", ws.close_code)
            return
        for f in frames:
            fz.count_frame("ws", f)
