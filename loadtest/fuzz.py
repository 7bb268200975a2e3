"""Fuzz a live liveroom server while a canary room checks that it still delivers.

    python -m loadtest.fuzz --seconds 60 [--seed 7] [--url http://127.0.0.1:8080]

prints one JSON line on stdout (the summary) and exits 0 when nothing failed,
1 when something did (the summary's ``failures`` say what), 2 on bad usage.

Theory of operation
-------------------
Without ``--url`` the fuzzer starts its own ``liveroom serve --dev`` on a
free port (QUIC on, a throw-away data directory, scripted characters) and
reads its TCP and QUIC ports from the log; with ``--url`` it attacks that
server (tokens from ``POST /v1/dev/token``, so it must run ``--dev``; the
backend API key from ``--api-key``/``LIVEROOM_API_KEY``; the QUIC port from
``GET /v1/quic``; RSS and descriptors only with ``--pid``).

Attackers, all at once for ``--seconds``:

- WebSocket workers (``--ws-workers``): raw sockets (loadtest/raw_ws.py),
  each connection a valid ``hello`` (or, now and then, a mutated one) with a
  viewer or host token, then a few hundred frames: mostly *structure-aware
  mutations* of valid frames (a field dropped, retyped, replaced by a nasty
  value: nested past the depth limit or past the parser, over the size
  limits, integers past 64 bits, NaN, lone surrogates, msgpack bin and ext
  values, non-string keys, unknown types), some valid frames, some raw byte
  mutations of an encoded frame (flipped, cut, spliced), in msgpack (binary)
  or JSON (text); and now and then a transport attack that ends the
  connection (a reserved opcode or bit, an unmasked frame, a fragmented or
  oversized control frame, an orphan continuation, a message in too many
  fragments, invalid UTF-8 in a text frame, a header announcing a message
  over the hard limit, a frame cut off by the end of the socket);
- WebTransport workers (``--wt-workers``), the same over the QUIC edge
  (``edge/wt_client.py``), and for transport attacks: a length prefix with
  the top bit set, over the hard limit, a frame cut off by the end of the
  stream, bytes that are no frame at all;
- HTTP workers (``--http-workers``): every route of the edge (dev token,
  publish action, write state, the CDN GETs, the characters' routes, health,
  metrics, QUIC info, static files, unknown paths) with random and mutated
  bodies, methods, headers and path parameters, and now and then raw bytes
  on a TCP connection instead of a request.

Fuzzed frames name only the fuzz rooms and users (small fixed pools, so the
state a fuzzer may legitimately leave behind is bounded: a leak is growth
beyond that). The canary room is never named: a *cross-room effect* is
anything the canary sees that its own sender did not send, or anything it
does not see.

The canary: two honest members of their own room, a host over WebSocket
(msgpack) and a viewer over WebTransport (JSON) when QUIC is on; the host
sends one action and one state change every ``--canary-interval`` (100 ms).
Both members check every action arrives once, in order, within
``--canary-deadline`` (2 s), and that the state section they watch reaches
each written value within the deadline, never going back. The canary runs in
a process of its own, so the fuzzers' CPU cannot make it late.

It fails on: the server process exiting (or ``/healthz`` failing), a canary
that loses, reorders, duplicates or is late, a closed canary connection, an
``internal`` error frame, an HTTP 5xx (other than the documented 503s),
an HTTP request that hangs, a WebSocket close 1011, or a leak: RSS or open
descriptors of the server at the end over ``--rss-bound-mb``/``--fd-bound``
above what they were after the warm-up (the first fifth of the run), the
fuzz connections closed; or a log flood: more than ``--max-log-errors``
ERROR lines a minute in the server's log (our own server only), since a
failure a client can cause at will must be logged at a bounded rate. The
summary counts frames sent per transport and codec, errors by code, closes
by code, HTTP statuses, the canary's latency and the server's RSS,
descriptors and CPU time.

Deterministic given ``--seed``: each worker draws from its own
``random.Random(f"{seed}/{kind}/{index}")``, so the inputs (their order and
content) are the same on every run; how many of them fit into the time, and
how the server's replies interleave, are not.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import logging
import math
import multiprocessing
import os
import random
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import msgpack

from edge.auth import mint_token
from edge.client import ClosedError, LiveroomClient
from loadtest.procstat import Usage, cpu_seconds, usage
from loadtest.raw_ws import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, RawWebSocket, frame
from wire.codecs import JSON, MSGPACK
from wire.webtransport import wt_frame

log = logging.getLogger("liveroom.fuzz")

REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening on http://([\d.]+):(\d+)")
_QUIC = re.compile(r"quic listening on udp://([\d.]+):(\d+)/wt \(certificate sha256 ([0-9a-f]+)")

ROOMS = [f"fz-{i}" for i in range(8)]
SECTIONS = ["meta", "pinned", "board", "stage", "positions", "s1", "s2", "s3"]
USERS = [f"fz-u{i}" for i in range(32)]
KINDS = ["comment", "gift", "like", "poll.vote", "agent.say", "system.notice", "x"]
FRAME_TYPES = ["hello", "join", "leave", "action", "state", "sync", "peer", "peer_ack", "ping"]
# HTTP answers that are documented and not the server's failure.
DOCUMENTED_5XX = {"unavailable", "model_unavailable"}
MAX_FRAME = 65536  # the server's default max_frame_bytes (frames above it are refused)


# --------------------------------------------------------------------------
# Nasty values and mutations (pure: a Random in, values out)
# --------------------------------------------------------------------------
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


def valid_frame(rng: random.Random, *, hello_token: str | None = None) -> dict[str, Any]:
    """A well-formed client frame about the fuzz rooms and users."""
    ftype = "hello" if hello_token else rng.choice(FRAME_TYPES[1:])
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
                            "inbox_cursor", "zzz"])] = nasty(rng)
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


# --------------------------------------------------------------------------
# The canary
# --------------------------------------------------------------------------
class CanaryReader:
    """One canary member's view: every canary action once, in order, in
    time; the watched state section never going back, in time."""

    def __init__(self, name: str, client: LiveroomClient, room: str) -> None:
        self.name, self.client, self.room = name, client, room
        self.next_i = 0  # the canary action expected next
        self.state_i = -1  # the highest canary state value seen
        self.lost = self.reordered = self.foreign = self.state_back = 0
        self.latencies: list[float] = []
        self.closed: str | None = None

    async def run(self) -> None:
        try:
            while True:
                f = await self.client.recv(timeout=3600)
                if f.get("room") != self.room:
                    continue
                if f["type"] == "action":
                    self._action(f)
                elif f["type"] == "state":
                    if f["section"] != "canary":
                        self.foreign += 1
                    elif f["value"]["i"] <= self.state_i:
                        self.state_back += 1
                    else:
                        self.state_i = f["value"]["i"]
        except ClosedError as exc:
            self.closed = f"closed {exc.code} {exc.reason}"
        except Exception as exc:  # a broken frame is a finding too
            self.closed = f"{type(exc).__name__}: {exc}"

    def _action(self, f: dict[str, Any]) -> None:
        body = f.get("body")
        if f.get("kind") != "canary" or not isinstance(body, dict) or "i" not in body:
            self.foreign += 1
            return
        i = body["i"]
        if i < self.next_i:
            self.reordered += 1
            return
        self.lost += i - self.next_i
        self.next_i = i + 1
        self.latencies.append(time.time() - body["t"])


class Canary:
    """Two honest members of a room of their own; ``sender`` (a host) sends
    an action and a state change every ``interval``; both members must see
    each in order and within ``deadline``."""

    def __init__(self, sender: LiveroomClient, receiver: LiveroomClient, room: str,
                 interval: float = 0.1, deadline: float = 2.0) -> None:
        self.room, self.interval, self.deadline = room, interval, deadline
        self.sender = sender
        self.readers = [CanaryReader("sender", sender, room),
                        CanaryReader("receiver", receiver, room)]
        self.sent_at: list[float] = []
        self.late: Counter[str] = Counter()  # reader -> deadline misses
        self.worst_late = 0.0
        self.send_errors = 0
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        for r in self.readers:
            joined = await r.client.join(self.room)
            assert joined["type"] == "joined", joined
        self._tasks = [asyncio.create_task(r.run()) for r in self.readers]
        self._tasks += [asyncio.create_task(self._send()), asyncio.create_task(self._watch())]

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        t_next = loop.time()
        while True:
            i = len(self.sent_at)
            now = time.time()
            self.sent_at.append(now)
            try:
                await self.sender.action(self.room, "canary", {"i": i, "t": now})
                await self.sender.set_state(self.room, "canary", {"i": i, "t": now})
            except Exception:
                self.send_errors += 1
                return
            t_next += self.interval
            await asyncio.sleep(max(0.0, t_next - loop.time()))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            self.check()

    def check(self) -> None:
        """Deadline misses now: the oldest action a reader still waits for,
        and the newest state value it should hold by now."""
        now = time.time()
        due = bisect.bisect_right(self.sent_at, now - self.deadline) - 1
        if due < 0:
            return
        for r in self.readers:
            waiting = [i for i in (r.next_i, r.state_i + 1) if i <= due]
            if waiting:
                oldest = min(waiting)
                self.late[r.name] += 1
                self.worst_late = max(self.worst_late, now - self.sent_at[oldest])

    async def stop(self) -> dict[str, Any]:
        # Give the last messages their deadline to arrive.
        sender = self._tasks[2]
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        last = len(self.sent_at) - 1
        loop = asyncio.get_running_loop()
        end = loop.time() + self.deadline
        while loop.time() < end and not all(
                (r.next_i > last and r.state_i >= last) or r.closed for r in self.readers):
            await asyncio.sleep(0.02)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for r in self.readers:
            if r.next_i <= last:
                r.lost += last + 1 - r.next_i
                r.next_i = last + 1
        return self.summary()

    def summary(self) -> dict[str, Any]:
        lat = sorted(x for r in self.readers for x in r.latencies)
        failures = []
        for r in self.readers:
            for what in ("lost", "reordered", "foreign", "state_back"):
                n = getattr(r, what)
                if n:
                    failures.append(f"canary {r.name}: {n} {what}")
            if r.closed:
                failures.append(f"canary {r.name}: {r.closed}")
        for name, n in self.late.items():
            failures.append(f"canary {name}: missed the {self.deadline}s deadline "
                            f"({n} checks, up to {self.worst_late:.2f}s late)")
        if self.send_errors:
            failures.append("canary sender: could not send")
        return {"sent": len(self.sent_at),
                "received": {r.name: r.next_i - r.lost for r in self.readers},
                "lost": sum(r.lost for r in self.readers),
                "reordered": sum(r.reordered for r in self.readers),
                "late_checks": sum(self.late.values()),
                "latency_ms": {"p50": _ms(_pct(lat, 0.5)), "p99": _ms(_pct(lat, 0.99)),
                               "max": _ms(lat[-1] if lat else 0.0)},
                "failures": failures}


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 1)


@dataclass
class CanarySpec:
    ws_url: str
    wt_url: str | None
    cert_sha256: str | None
    sender_token: str
    receiver_token: str
    room: str
    interval: float
    deadline: float


def _canary_process(spec: CanarySpec, pipe: Connection) -> None:
    """The canary in a process of its own: ready, then run until told to
    stop, then the summary."""
    async def main() -> None:
        sender = await LiveroomClient.connect(spec.ws_url, spec.sender_token, codec=MSGPACK)
        if spec.wt_url:
            receiver = await LiveroomClient.connect(spec.wt_url, spec.receiver_token,
                                                    codec=JSON, cert_sha256=spec.cert_sha256)
        else:
            receiver = await LiveroomClient.connect(spec.ws_url, spec.receiver_token, codec=JSON)
        canary = Canary(sender, receiver, spec.room, spec.interval, spec.deadline)
        await canary.start()
        pipe.send("ready")
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_reader(pipe.fileno(), stop.set)
        await stop.wait()
        loop.remove_reader(pipe.fileno())
        pipe.recv()
        summary = await canary.stop()
        pipe.send(summary)
        await sender.close()
        await receiver.close()

    try:
        asyncio.run(main())
    except Exception as exc:
        pipe.send({"failures": [f"canary could not run: {type(exc).__name__}: {exc}"]})


# --------------------------------------------------------------------------
# The server under attack
# --------------------------------------------------------------------------
class Server:
    """Our own ``liveroom serve --dev`` (``start``) or someone else's (``--url``)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.pid: int | None = None
        self.url = ""
        self.quic_port = 0
        self.cert_sha256 = ""
        self.secret: str | None = None
        self.api_key: str | None = None
        self.log: deque[str] = deque(maxlen=200)
        self.tracebacks = 0
        self.error_lines = 0
        self._ready = threading.Event()
        self._data_dir: tempfile.TemporaryDirectory[str] | None = None
        self._log_file: Any = None

    def start(self, timeout: float = 30.0, log_path: str | None = None) -> Server:
        self._data_dir = tempfile.TemporaryDirectory(prefix="liveroom-fuzz-")
        self.secret, self.api_key = secrets.token_hex(32), secrets.token_hex(16)
        env = {**os.environ, "LIVEROOM_JWT_SECRET": self.secret,
               "LIVEROOM_API_KEY": self.api_key, "PYTHONUNBUFFERED": "1",
               "LIVEROOM_AGENT_BACKEND": "scripted",
               # The canary sends 10 actions a second; the default is 5.
               "LIVEROOM_ACTION_RATE": "20", "LIVEROOM_ACTION_BURST": "40"}
        cmd = [sys.executable, "-m", "liveroom.cli", "serve", "--dev", "--host", "127.0.0.1",
               "--port", "0", "--quic-port", "0", "--data-dir", self._data_dir.name]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, text=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = self.proc.pid
        self._log_file = open(log_path, "w") if log_path else None
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("the server did not start:\n" + "".join(self.log))
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            if self._log_file is not None:
                self._log_file.write(line)
            if "Traceback" in line:
                self.tracebacks += 1
            if " ERROR " in line or " CRITICAL " in line:
                self.error_lines += 1
            q = _QUIC.search(line)
            if q:
                self.quic_port, self.cert_sha256 = int(q.group(2)), q.group(3)
            m = _LISTENING.search(line)
            if m and not self._ready.is_set():
                self.url = f"http://{m.group(1)}:{m.group(2)}"
                self._ready.set()

    def exited(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def usage(self) -> Usage | None:
        if self.pid is None:
            return None
        try:
            return usage(self.pid)
        except OSError:
            return None

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            code = proc.returncode
        if self._log_file is not None:
            self._log_file.close()
        if self._data_dir is not None:
            self._data_dir.cleanup()
        return code

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/ws"

    @property
    def wt_url(self) -> str | None:
        if not self.quic_port:
            return None
        host = urlsplit(self.url).hostname
        return f"https://{host}:{self.quic_port}/wt"


# --------------------------------------------------------------------------
# The fuzzers
# --------------------------------------------------------------------------
@dataclass
class Stats:
    frames: Counter[str] = field(default_factory=Counter)  # transport/codec -> sent
    attacks: Counter[str] = field(default_factory=Counter)  # transport/name -> sent
    errors: Counter[str] = field(default_factory=Counter)  # error code -> received
    closes: Counter[str] = field(default_factory=Counter)  # transport/code -> seen
    http: Counter[str] = field(default_factory=Counter)  # status -> answers
    connections: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)  # first of each client-side error

    def fail(self, what: str) -> None:
        if len(self.failures) < 50:
            self.failures.append(what)


class Fuzz:
    """What every worker shares: the target, the tokens, the clock, the counts."""

    def __init__(self, server: Server, args: argparse.Namespace, stats: Stats) -> None:
        self.server, self.args, self.stats = server, args, stats
        self.stop = asyncio.Event()
        self.http: aiohttp.ClientSession | None = None
        self.tokens: dict[tuple[str, str], str] = {}
        self.connections: set[Any] = set()

    async def token(self, user: str, role: str = "viewer") -> str:
        key = (user, role)
        if key not in self.tokens:
            if self.server.secret:
                self.tokens[key] = mint_token(self.server.secret, user, user, role, time.time(),
                                              86400)
            else:
                assert self.http is not None
                async with self.http.post(f"{self.server.url}/v1/dev/token",
                                          json={"user": user, "role": role,
                                                "ttl": 86400}) as r:
                    if r.status != 200:
                        raise RuntimeError(f"POST /v1/dev/token answered {r.status}: "
                                           "the server must run with --dev")
                    self.tokens[key] = (await r.json())["token"]
        return self.tokens[key]

    async def pause(self, rng: random.Random) -> None:
        # About 60 frames a second per connection: under the server's
        # per-connection frame rate, so frames reach the checks behind it.
        await asyncio.sleep(0.01 + 0.01 * rng.random())

    def count_frame(self, transport: str, f: dict[str, Any]) -> None:
        if f.get("type") == "error":
            code = str(f.get("code"))
            self.stats.errors[code] += 1
            if code == "internal":
                self.stats.fail(f"{transport}: internal error frame {f}")

    def count_close(self, transport: str, code: int | None) -> None:
        self.stats.closes[f"{transport}/{code}"] += 1
        if code == 1011:
            self.stats.fail(f"{transport}: closed 1011 (internal error)")


def _payload(rng: random.Random, codec: str, f: dict[Any, Any]) -> bytes:
    data = encode(f, codec)
    return byte_mutation(rng, data) if rng.random() < 0.15 else data


async def ws_worker(fz: Fuzz, index: int) -> None:
    rng = random.Random(f"{fz.args.seed}/ws/{index}")
    host, port = urlsplit(fz.server.url).hostname or "127.0.0.1", urlsplit(fz.server.url).port
    assert port is not None
    while not fz.stop.is_set():
        codec = rng.choice([MSGPACK, JSON])
        key = f"ws/{codec}"
        role = rng.choice(["viewer", "viewer", "host"])
        token = await fz.token(rng.choice(USERS), role)
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
            for room in rng.sample(ROOMS, rng.randrange(1, 4)):
                _ws_send(ws, codec, encode({"type": "join", "room": room}, codec))
            for _ in range(rng.randrange(20, 400)):
                if fz.stop.is_set() or ws.close_code is not None:
                    break
                pick = rng.random()
                if pick < 0.01:
                    name, raw = ws_attack(rng)
                    fz.stats.attacks[f"ws/{name}"] += 1
                    ws.send_raw(raw)
                    break
                f = valid_frame(rng)
                if pick < 0.8:
                    f = mutate(rng, f)
                _ws_send(ws, codec, _payload(rng, codec, f))
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


async def wt_worker(fz: Fuzz, index: int) -> None:
    from edge.wt_client import WtConnection

    rng = random.Random(f"{fz.args.seed}/wt/{index}")
    wt_url = fz.server.wt_url
    assert wt_url is not None
    while not fz.stop.is_set():
        codec = rng.choice([MSGPACK, JSON])
        key = f"wt/{codec}"
        token = await fz.token(rng.choice(USERS), rng.choice(["viewer", "host"]))
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
            for room in rng.sample(ROOMS, rng.randrange(1, 4)):
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
                f = valid_frame(rng)
                if pick < 0.8:
                    f = mutate(rng, f)
                await send(_payload(rng, codec, f))
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


# -- HTTP -------------------------------------------------------------------
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


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------
async def _metric(http: aiohttp.ClientSession, url: str, name: str) -> float | None:
    try:
        async with http.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r:
            text = await r.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def _alive(server: Server, http: aiohttp.ClientSession) -> str | None:
    """None when the server is up, else why not."""
    code = server.exited()
    if code is not None:
        return f"the server exited with status {code}"
    try:
        async with http.get(f"{server.url}/healthz",
                            timeout=aiohttp.ClientTimeout(total=10)) as r:
            if r.status != 200:
                return f"/healthz answered {r.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"/healthz failed: {exc!r}"
    return None


async def run(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    stats = Stats()
    fz = Fuzz(server, args, stats)
    summary: dict[str, Any] = {"seed": args.seed, "seconds": args.seconds, "url": server.url,
                               "quic": bool(server.wt_url)}
    async with aiohttp.ClientSession() as http:
        fz.http = http
        if not server.quic_port:
            with contextlib.suppress(aiohttp.ClientError, ValueError):
                async with http.get(f"{server.url}/v1/quic") as r:
                    if r.status == 200:
                        info = await r.json()
                        server.quic_port, server.cert_sha256 = info["port"], info["cert_sha256"]
        room = f"canary-{secrets.token_hex(6)}"
        spec = CanarySpec(server.ws_url, server.wt_url, server.cert_sha256,
                          await fz.token("canary-sender", "host"),
                          await fz.token("canary-receiver"), room,
                          args.canary_interval, args.canary_deadline)
        ctx = multiprocessing.get_context("spawn")
        pipe, child_pipe = ctx.Pipe()
        canary = ctx.Process(target=_canary_process, args=(spec, child_pipe), daemon=True)
        canary.start()
        if not pipe.poll(30):
            raise RuntimeError("the canary did not start")
        first = pipe.recv()
        if first != "ready":
            canary.join(5)
            return {**summary, "ok": False, "failures": first.get("failures", [str(first)])}
        base_connections = await _metric(http, server.url, "liveroom_connections")

        workers = [asyncio.create_task(ws_worker(fz, i)) for i in range(args.ws_workers)]
        if server.wt_url:
            workers += [asyncio.create_task(wt_worker(fz, i)) for i in range(args.wt_workers)]
        workers += [asyncio.create_task(http_worker(fz, i)) for i in range(args.http_workers)]

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        warm_at, end_at = t0 + args.seconds / 5, t0 + args.seconds
        warm: Usage | None = None
        down: str | None = None
        while loop.time() < end_at:
            await asyncio.sleep(min(1.0, max(0.0, end_at - loop.time())))
            if warm is None and loop.time() >= warm_at:
                warm = server.usage()
            down = await _alive(server, http)
            if down:
                break
            for t in list(workers):
                if t.done() and not t.cancelled() and t.exception() is not None:
                    stats.fail(f"a fuzz worker failed: {t.exception()!r}")
                    workers.remove(t)
        fz.stop.set()
        done, pending = await asyncio.wait(workers, timeout=15)
        for t in pending:
            t.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                stats.fail(f"a fuzz worker failed: {t.exception()!r}")

        # The fuzzers are gone: the server's connections come back to the
        # canary's; then what it holds is compared with the warm-up.
        connections_end = None
        if not down:
            deadline = loop.time() + 15
            while loop.time() < deadline:
                connections_end = await _metric(http, server.url, "liveroom_connections")
                if connections_end == base_connections:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            down = await _alive(server, http)
        end = server.usage()
        pipe.send("stop")
        canary_summary: dict[str, Any] = pipe.recv() if pipe.poll(30) else {
            "failures": ["the canary did not report"]}
        canary.join(10)

    if down:
        stats.fail(down)
    else:
        if connections_end != base_connections:
            stats.fail(f"liveroom_connections {connections_end} after the fuzzers left, "
                       f"{base_connections} before they came")
        if warm is not None and end is not None:
            if end.rss - warm.rss > args.rss_bound_mb << 20:
                stats.fail(f"RSS grew {(end.rss - warm.rss) >> 20} MB after the warm-up "
                           f"(bound {args.rss_bound_mb} MB)")
            if end.fds - warm.fds > args.fd_bound:
                stats.fail(f"open descriptors grew by {end.fds - warm.fds} after the warm-up "
                           f"(bound {args.fd_bound})")
    # Client-caused failures are logged at a bounded rate (plumbing/ratelog.py):
    # a log that grows with what attackers send is a flood.
    log_bound = max(args.max_log_errors, args.max_log_errors * args.seconds / 60)
    if server.error_lines > log_bound:
        stats.fail(f"the server logged {server.error_lines} ERROR lines "
                   f"({server.tracebacks} tracebacks) in {args.seconds:g}s: over "
                   f"{args.max_log_errors} a minute, the log grows with the attack")
    failures = stats.failures + canary_summary.pop("failures", [])
    summary.update({
        "ok": not failures,
        "failures": failures,
        "frames_sent": dict(sorted(stats.frames.items())),
        "attacks": dict(sorted(stats.attacks.items())),
        "connections": dict(stats.connections),
        "errors_by_code": dict(stats.errors.most_common()),
        "closes_by_code": dict(sorted(stats.closes.items())),
        "http_by_status": dict(sorted(stats.http.items())),
        "http_client_errors": stats.examples,
        "canary": canary_summary,
        "server": {
            "rss_warm_mb": warm.rss_mb if warm else None,
            "rss_end_mb": end.rss_mb if end else None,
            "fds_warm": warm.fds if warm else None, "fds_end": end.fds if end else None,
            "connections_before": base_connections, "connections_end": connections_end,
            "cpu_s": round(cpu_seconds(server.pid), 1) if server.pid else None,
            "log_tracebacks": server.tracebacks, "log_error_lines": server.error_lines,
            "rss_bound_mb": args.rss_bound_mb, "fd_bound": args.fd_bound,
        },
    })
    return summary


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.fuzz", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (default 60)")
    p.add_argument("--seed", type=int, default=1, help="the inputs' seed (default 1)")
    p.add_argument("--url", help="a running server (started with --dev) instead of our own")
    p.add_argument("--api-key", default=os.environ.get("LIVEROOM_API_KEY"),
                   help="with --url: the backend API key (default $LIVEROOM_API_KEY)")
    p.add_argument("--pid", type=int, help="with --url: the server's pid, for the leak check")
    p.add_argument("--ws-workers", type=int, default=8)
    p.add_argument("--wt-workers", type=int, default=3)
    p.add_argument("--http-workers", type=int, default=3)
    p.add_argument("--canary-interval", type=float, default=0.1)
    p.add_argument("--canary-deadline", type=float, default=2.0)
    p.add_argument("--rss-bound-mb", type=int, default=48,
                   help="RSS growth allowed after the warm-up (default 48)")
    p.add_argument("--fd-bound", type=int, default=20,
                   help="open descriptors growth allowed after the warm-up (default 20)")
    p.add_argument("--max-log-errors", type=int, default=30,
                   help="ERROR lines a minute the server may log (default 30; ours only)")
    p.add_argument("--server-log", help="without --url: write the server's log to this file")
    p.add_argument("--log-level", default="WARNING")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.seconds <= 0:
        print("--seconds must be positive", file=sys.stderr)
        return 2
    server = Server()
    if args.url:
        server.url, server.api_key, server.pid = args.url.rstrip("/"), args.api_key, args.pid
    else:
        server.start(log_path=args.server_log)
    try:
        summary = asyncio.run(run(args, server))
    finally:
        status = None if args.url else server.stop()
    if status not in (None, 0):
        summary["ok"] = False
        summary["failures"].append(f"the server exited with status {status} on SIGTERM")
    if not summary["ok"] and server.log:
        summary["server"]["log_tail"] = list(server.log)[-20:]
    print(json.dumps(summary), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
