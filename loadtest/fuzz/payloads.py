"""What the fuzzers send, pure: a ``random.Random`` in, values and bytes out.

Valid client frames about the fuzz rooms and users (small fixed pools, so the
state a fuzzer may legitimately leave behind is bounded), *structure-aware
mutations* of them (a field dropped, retyped, replaced by a nasty value),
the nasty values themselves, an encoder that writes what a codec can carry
(and raw nested bytes past any parser's depth), and raw byte mutations of an
encoded frame.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from wire.codecs import JSON, MSGPACK

ROOMS = [f"fz-{i}" for i in range(8)]
SECTIONS = ["meta", "pinned", "board", "stage", "positions", "s1", "s2", "s3"]
USERS = [f"fz-u{i}" for i in range(32)]
KINDS = ["comment", "gift", "like", "poll.vote", "agent.say", "system.notice", "x"]
FRAME_TYPES = ["hello", "join", "leave", "action", "state", "sync", "peer", "peer_ack", "ping",
               "moderate"]
# The moderate frame's ops, and some that are not (the API's, a typo).
MODERATE_OPS = ["ban", "unban", "mute", "unmute", "kick", "retract"]
NOT_OPS = ["disconnect", "close", "Ban", "", "ban ", "unkick"]
MAX_FRAME = 65536  # the server's default max_frame_bytes (frames above it are refused)


_DEEP = "@@deep@@"  # a placeholder an encoder turns into raw nested bytes

NASTY_STRINGS = ["", " ", "x" * 65, "x" * 1000, "é" * 40, "\u202e", "\x00", "a\nb", "../..",
                 "%00", "meta.", ".meta", "Meta", "stage.", "demo", "fz-0\x00", "🙂" * 17,
                 "a" * 98, "canary-nope", "null", "{}", "<script>", "\\", "'", '"']


@dataclass
class Deep:
    """A value nested ``levels`` deep, written as raw bytes by ``encode``
    (no encoder would build one past its own recursion limit)."""

    levels: int


def nasty(rng: random.Random) -> Any:
    """One value a server must refuse or survive."""
    pick = rng.randrange(16)
    if pick == 0:
        # 960-990: past the JSON encoder's recursion limit deep in a call stack,
        # not at its top (issue 12, item 1); 30,000: past the parsers.
        return Deep(rng.choice([33, 40, 100, 960, 975, 990, 1000, 5000, 30_000]))
    if pick == 1:
        return "x" * rng.choice([4096, 70_000])
    if pick == 2:
        return rng.choice([2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30, -(10**30)])
    if pick == 3:
        return rng.choice([math.nan, math.inf, -math.inf])
    if pick == 4:
        return "\ud800" + rng.choice(["", "x"])  # a lone surrogate
    if pick == 5:
        return b"\x00\xff" * rng.randrange(1, 8)  # msgpack bin; JSON cannot
    if pick == 6:
        return msgpack.ExtType(rng.randrange(128), b"\x01\x02")
    if pick == 7:
        return {rng.randrange(100): "int key"}
    if pick == 8:
        return [rng.random() for _ in range(rng.choice([10, 2000]))]
    if pick == 9:
        return {f"k{i}": i for i in range(rng.choice([10, 3000]))}
    if pick == 10:
        return rng.choice(NASTY_STRINGS)
    if pick == 11:
        return rng.choice([None, True, False, 0, -1, 1.5, [], {}, ""])
    if pick == 12:
        return {"type": rng.choice(FRAME_TYPES)}  # a frame inside a frame
    if pick == 13:
        levels = rng.randrange(1, 40)
        v: Any = 1
        for _ in range(levels):
            v = [v] if rng.random() < 0.5 else {"a": v}
        return v
    if pick == 14:
        return rng.randrange(-(2**31), 2**31)
    return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(1, 40)))


def honest_value(rng: random.Random) -> Any:
    return rng.choice([{"text": "hi"}, {"n": rng.randrange(1000)}, [1, 2, 3], "v", None,
                       {"x": {"y": [rng.random()]}}])


def client_id(rng: random.Random) -> Any:
    """An action's own ``id``: mostly a good one (1..64 of the user id
    characters), now and then one at or past the bound or of other characters."""
    if rng.random() < 0.85:
        return f"c-{rng.randrange(10**6)}"
    return rng.choice(["x" * 64, "x" * 65, "", "a b", "é", "id/../x", "\x00", 7, None])


def moderate_frame(rng: random.Random, room: str, *, users: list[str] | None = None,
                   action_ids: list[str] | None = None) -> dict[str, Any]:
    """A well-formed ``moderate`` frame (or one with an op that is not one):
    ``users`` are the targets (the fuzz users by default), ``action_ids``
    the ids a retract may name (ids the fuzzers saw, else made up)."""
    op = rng.choice(MODERATE_OPS) if rng.random() < 0.95 else rng.choice(NOT_OPS)
    f: dict[str, Any] = {"type": "moderate", "room": room, "op": op}
    if op == "retract":
        f["id"] = rng.choice(action_ids) if action_ids and rng.random() < 0.7 \
            else rng.choice([f"{rng.randrange(16**12):012x}-{rng.randrange(99)}", "x" * 64])
    else:
        f["user"] = rng.choice(users or USERS)
    if op in ("ban", "mute") and rng.random() < 0.8:
        # Mostly short, so the fuzz users come back; 366 days is the bound.
        f["seconds"] = rng.choice([1, 2, 5, 30, 31_622_400])
    if rng.random() < 0.5:
        f["reason"] = rng.choice(["spam", "", "x" * 200, "é" * 50])
    if rng.random() < 0.5:
        f["ref"] = rng.randrange(10**6)
    return f


def valid_frame(rng: random.Random, *, hello_token: str | None = None,
                ftype: str | None = None) -> dict[str, Any]:
    """A well-formed client frame about the fuzz rooms and users (of type
    ``ftype``, else of any type)."""
    ftype = "hello" if hello_token else ftype or rng.choice(FRAME_TYPES[1:])
    room = rng.choice(ROOMS)
    f: dict[str, Any] = {"type": ftype}
    if rng.random() < 0.5:
        f["ref"] = rng.choice([rng.randrange(10**6), f"r{rng.randrange(100)}"])
    if ftype == "hello":
        f.update(token=hello_token, v=1)
    elif ftype in ("join", "sync"):
        f["room"] = room
        if rng.random() < 0.5:
            f["known"] = {rng.choice(SECTIONS): rng.randrange(5) for _ in range(3)}
            f["epoch"] = rng.choice(["0123456789abcdef", "x"])
    elif ftype == "leave":
        f["room"] = room
    elif ftype == "action":
        kind = rng.choice(KINDS)
        body: Any = {"comment": {"text": "fuzz"}, "gift": {"gift": "rose", "count": 2},
                     "like": None}.get(kind, honest_value(rng))
        f.update(room=room, kind=kind, body=body)
        if rng.random() < 0.5:
            f["id"] = client_id(rng)
    elif ftype == "state":
        f.update(room=room, section=rng.choice(SECTIONS), value=honest_value(rng))
        if rng.random() < 0.3:
            f["expect"] = rng.randrange(4)
    elif ftype == "peer":
        f.update(to=rng.choice(USERS), id=f"m{rng.randrange(10**6)}", body=honest_value(rng))
    elif ftype == "peer_ack":
        f["upto"] = rng.randrange(1, 10**4)
    elif ftype == "ping":
        f["t"] = rng.random()
    elif ftype == "moderate":
        f.update(moderate_frame(rng, room))
    return f


def mutate(rng: random.Random, f: dict[str, Any]) -> dict[Any, Any]:
    """A structure-aware mutation: one to three fields dropped, retyped,
    replaced by a nasty value, or added."""
    out: dict[Any, Any] = dict(f)
    for _ in range(rng.randrange(1, 4)):
        keys = list(out)
        op = rng.randrange(5)
        if op == 0 and keys:
            del out[rng.choice(keys)]
        elif op in (1, 2) and keys:
            out[rng.choice(keys)] = nasty(rng)
        elif op == 3:
            out[rng.choice(["type", "room", "kind", "body", "value", "section", "known",
                            "epoch", "to", "id", "upto", "t", "ref", "expect", "v", "token",
                            "inbox_cursor", "op", "user", "seconds", "reason",
                            "zzz"])] = nasty(rng)
        else:
            out["type"] = rng.choice([*FRAME_TYPES, "batch", "welcome", "Join", "", 5, None])
    return out


def _deep_bytes(levels: int, codec: str) -> bytes:
    if codec == MSGPACK:
        return b"\x91" * levels + b"\x01"  # fixarray of one, nested
    return b"[" * levels + b"1" + b"]" * levels


def _plain(value: Any) -> Any:
    """``value`` with every Deep replaced by a placeholder string."""
    if isinstance(value, Deep):
        return f"{_DEEP}{value.levels}{_DEEP}"
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


_PLACEHOLDER = re.compile(re.escape(_DEEP).encode() + rb"(\d+)" + re.escape(_DEEP).encode())


def encode(obj: Any, codec: str) -> bytes:
    """``obj`` in ``codec``, as far as that codec can write it (an int
    msgpack cannot carry becomes a string of its digits, a bin or ext value
    becomes null in JSON, a lone surrogate goes into msgpack as the invalid
    UTF-8 it is); a Deep becomes raw nested bytes."""
    plain = _plain(obj)
    if codec == MSGPACK:
        try:
            raw: bytes = msgpack.packb(plain, use_bin_type=True)
        except (OverflowError, UnicodeEncodeError):
            raw = msgpack.packb(_writable(plain, codec), use_bin_type=True,
                                unicode_errors="surrogatepass")
        if _DEEP.encode() not in raw:
            return raw
        # The placeholder is a fixstr (under 32 bytes): its header byte goes too.
        return re.sub(rb"[\xa0-\xbf]" + _PLACEHOLDER.pattern, _deep(codec), raw)
    try:
        raw = json.dumps(plain).encode()
    except TypeError:
        raw = json.dumps(_writable(plain, codec)).encode()
    return re.sub(b'"' + _PLACEHOLDER.pattern + b'"', _deep(codec), raw)


def _deep(codec: str) -> Callable[[re.Match[bytes]], bytes]:
    return lambda m: _deep_bytes(int(m.group(1)), codec)


def _writable(value: Any, codec: str) -> Any:
    if isinstance(value, bytes | msgpack.ExtType):
        return None if codec == JSON else value
    if type(value) is int and not -(2**63) <= value < 2**64:
        return str(value) if codec == MSGPACK else value
    if isinstance(value, dict):
        return {k: _writable(v, codec) for k, v in value.items()}
    if isinstance(value, list):
        return [_writable(v, codec) for v in value]
    return value


def byte_mutation(rng: random.Random, data: bytes) -> bytes:
    """A raw mutation of an encoded frame: bytes flipped, cut, spliced or doubled."""
    if not data:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    b = bytearray(data)
    op = rng.randrange(5)
    if op == 0:
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 1:
        del b[rng.randrange(len(b)):]
    elif op == 2:
        at = rng.randrange(len(b) + 1)
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    elif op == 3:
        at = rng.randrange(len(b))
        b += b[at:]
    else:
        b = bytearray(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    return bytes(b)


def payload(rng: random.Random, codec: str, f: dict[Any, Any]) -> bytes:
    """``f`` encoded in ``codec``, its bytes mutated one time in seven or so."""
    data = encode(f, codec)
    return byte_mutation(rng, data) if rng.random() < 0.15 else data
