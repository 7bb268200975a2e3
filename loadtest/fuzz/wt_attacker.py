"""The WebTransport attacker: the WebSocket attacker's frames over the QUIC
edge (``edge/wt_client.py``), and for transport attacks (``wt_attack``): a
length prefix with the top bit set, over the hard limit, a frame cut off by
the end of the stream, bytes that are no frame at all."""

from __future__ import annotations

import asyncio
import json
import random
from collections import deque
from collections.abc import Callable

import aiohttp
import msgpack

from edge.client import LiveroomClient
from loadtest.fuzz.attack import Fuzz
from loadtest.fuzz.payloads import MAX_FRAME, ROOMS, USERS, encode, mutate, payload, valid_frame
from wire.codecs import JSON, MSGPACK
from wire.webtransport import wt_frame


def wt_attack(rng: random.Random) -> tuple[str, bytes]:
    """A WebTransport framing violation (the server ends the session)."""
    attacks: list[tuple[str, Callable[[], bytes]]] = [
        ("top_bit_length", lambda: bytes((0x80 | rng.randrange(128), 0, 0, 5)) + b"hello"),
        ("over_hard_limit", lambda: (4 * MAX_FRAME + 1 + rng.randrange(1000)).to_bytes(4, "big")),
        ("cut_off", lambda: wt_frame(msgpack.packb({"type": "ping"}))[:-2]),
        ("no_frame", lambda: bytes(rng.randrange(256) for _ in range(3))),
    ]
    name, make = rng.choice(attacks)
    return name, make()


async def wt_worker(fz: Fuzz, index: int) -> None:
    from edge.wt_client import WtConnection

    rng = random.Random(f"{fz.args.seed}/wt/{index}")
    wt_url = fz.server.wt_url
    assert wt_url is not None
    while not fz.stop.is_set():
        codec = rng.choice([MSGPACK, JSON])
        key = f"wt/{codec}"
        profile = fz.profile(rng)
        fz.stats.tokens[profile] += 1
        token = await fz.token(rng.choice(USERS), profile)
        try:
            c = await LiveroomClient.open(wt_url, codec=codec, cert_sha256=fz.server.cert_sha256)
        except (OSError, TimeoutError, ConnectionError) as exc:
            fz.stats.fail(f"wt: cannot connect: {exc!r}")
            await asyncio.sleep(1)
            continue
        assert isinstance(c.ws, WtConnection)
        wt = c.ws
        fz.stats.connections["wt"] += 1
        sent: deque[bytes] = deque(maxlen=3)
        reader = asyncio.create_task(_read_wt(fz, c, sent))

        async def send(data: bytes, wt: WtConnection = wt, sent: deque[bytes] = sent) -> None:
            sent.append(data)
            await wt.send_bytes(data)
        try:
            hello = valid_frame(rng, hello_token=token)
            await send(encode(mutate(rng, hello) if rng.random() < 0.05 else hello, codec))
            joined = rng.sample(ROOMS, rng.randrange(1, 4))
            for room in joined:
                await send(encode({"type": "join", "room": room}, codec))
            for _ in range(rng.randrange(20, 400)):
                if fz.stop.is_set() or wt.closed:
                    break
                pick = rng.random()
                if pick < 0.01:
                    name, raw = wt_attack(rng)
                    fz.stats.attacks[f"wt/{name}"] += 1
                    wt.send_stream(raw, end=name == "cut_off")
                    break
                if pick > 0.98:
                    for f in fz.burst(rng, joined):
                        await send(encode(f, codec))
                        fz.stats.frames[key] += 1
                f = fz.frame(rng, joined)
                if pick < 0.8:
                    f = mutate(rng, f)
                await send(payload(rng, codec, f))
                fz.stats.frames[key] += 1
                await fz.pause(rng)
            await asyncio.wait([reader], timeout=0.2)  # the replies to the last frames
        finally:
            reader.cancel()
            await c.close()
            await asyncio.gather(reader, return_exceptions=True)


async def _read_wt(fz: Fuzz, c: LiveroomClient, sent: deque[bytes]) -> None:
    """Count what the session receives. Decoded here, not by the client, so
    that a frame that does not decode is reported with the bytes around it."""
    seen: deque[bytes] = deque(maxlen=3)
    while True:
        msg = await c.ws.receive(timeout=3600)
        if msg.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
            fz.count_close("wt", c.ws.close_code)
            return
        raw = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
        try:
            obj = msgpack.unpackb(raw, raw=False) if msg.type is aiohttp.WSMsgType.BINARY \
                else json.loads(raw)
        except (ValueError, msgpack.UnpackException) as exc:
            fz.stats.fail(f"wt: the server sent a frame that does not decode ({exc!r:.80}): "
                          f"{raw[:80]!r}; the frames before it: {[r[:60] for r in seen]}; "
                          f"the last frames sent: {[r[:60] for r in sent]}")
            return
        seen.append(raw)
        for f in obj["frames"] if obj.get("type") == "batch" else [obj]:
            fz.count_frame("wt", f)
