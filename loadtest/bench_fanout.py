"""Headless fan-out benchmark: one big room, S viewers, a fixed offered rate.

    python -m loadtest.bench_fanout --viewers 1000 --rate 50000 --duration 5
    python -m loadtest.bench_fanout --viewers 1000 --rate 50000 --peer python-socketio

prints one JSON line on stdout (logs go to stderr).

Theory of operation
-------------------
The parent starts the server (``liveroom serve`` on port 0, or attaches to
``--url``), pinned to ``--server-cpu``. It then spawns ``--clients`` viewer
processes pinned to ``--client-cpu``; each runs uvloop and one raw
``asyncio.Protocol`` per connection (hand-made HTTP upgrade, masked client
frames, a minimal incremental parser for the server's unmasked frames). A
publisher process (also on the client cores) joins the room as a host and
sends actions at ``rate / viewers`` messages per second, paced by a 1 ms tick
(the due number of messages per tick, one write), open loop: it never waits
for the server.

Counting stays cheap so that the client is not the bottleneck:
- warm-up messages have kind ``warm``, measured ones kind ``bench``; a viewer
  counts deliveries with one ``bytes.count`` of the bench marker over the
  complete frames of each read, so a ``batch`` frame counts as its messages;
- latency is taken on *probe* connections only (about ``PROBES`` of them,
  spread evenly over the connection order): they decode every frame and
  subtract the publisher's send time (``body.t``, wall clock) from the
  receive time;
- each viewer process keeps a timeline of its cumulative count (every 20 ms),
  so the parent reads the deliveries inside the measured window without a
  round trip.

delivered_per_s is the deliveries received between the first and last
measured send, divided by the duration; loss is 1 - delivered/expected after a
bounded drain, expected being messages sent x viewers joined. CPU comes from
/proc/<pid>/stat over the measured window and RSS from /proc/<pid>/status
(after the viewers joined minus before they connected, per connection).
``*_saturated`` is set when a side used more than 90% of its cores: a reader
then knows which side limited the figures.

``--peer python-socketio`` runs the same load against a python-socketio
server (aiohttp + uvloop, ``--serve-socketio``, below), pinned to the same
core, one after the other; the viewers then speak Engine.IO v4 / Socket.IO v5
over WebSocket and the server emits the same action object to the room.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import json
import logging
import math
import multiprocessing
import os
import re
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import msgpack

log = logging.getLogger("liveroom.bench")

REPO = Path(__file__).resolve().parent.parent
ROOM = "bench"
LIVEROOM = "liveroom"
SOCKETIO = "python-socketio"
JSON = "json"
MSGPACK = "msgpack"
DEFAULT_SECRET = "bench-fanout-secret-0123456789abcdef"
# Connections that decode every frame for latency; the others only count.
PROBES = 100
# Connection attempts in flight per viewer process (the edge's listen backlog
# is aiohttp's default, 128).
CONNECT_CONCURRENCY = 64
SATURATED = 0.9
_LISTENING = re.compile(r"listening on http://([\d.]+):(\d+)")

# What a viewer counts: one occurrence per measured message, in every wire
# variant (liveroom's server emits type, room, kind, ... in that order; the
# socket.io peer emits the same object).
STATE_SECTION = "stage"
BENCH_MARK = {JSON: b'"kind":"bench"', MSGPACK: b"\xa4kind\xa5bench"}
# Every action, warm-up ones included: what the server actually pushed.
ACTION_MARK = {JSON: b'"kind":"', MSGPACK: b"\xa4kind"}
JOINED_MARK = {JSON: b'"type":"joined"', MSGPACK: b"\xa4type\xa6joined"}
ERROR_MARK = {JSON: b'"type":"error"', MSGPACK: b"\xa4type\xa5error"}

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_pack_h16 = struct.Struct("!BBH").pack
_pack_h64 = struct.Struct("!BBQ").pack


# --------------------------------------------------------------------------
# Wire helpers (pure)
# --------------------------------------------------------------------------
def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One masked client frame (RFC 6455 5.3: every client frame is masked)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = _pack_h16(first, 0x80 | 126, n)
    else:
        head = _pack_h64(first, 0x80 | 127, n)
    mask = os.urandom(4)
    if n:
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        payload = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
    return head + mask + payload


def upgrade_request(host: str, port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def encode_liveroom(obj: dict[str, Any], codec: str) -> bytes:
    if codec == MSGPACK:
        return client_frame(msgpack.packb(obj, use_bin_type=True), OP_BINARY)
    return client_frame(json.dumps(obj, separators=(",", ":")).encode(), OP_TEXT)


def encode_socketio_event(event: str, data: Any, ack: int | None = None) -> bytes:
    """An Engine.IO message (4) holding a Socket.IO event (2) on namespace /."""
    head = "42" if ack is None else f"42{ack}"
    return client_frame((head + json.dumps([event, data], separators=(",", ":"))).encode())


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


def parse_cpus(text: str) -> set[int]:
    """'1', '1,3' or '1-3' -> a CPU set."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(part))
    return cpus


# --------------------------------------------------------------------------
# /proc readings
# --------------------------------------------------------------------------
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (all threads), in seconds; zeros if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0, 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def core_ticks(cpus: set[int] | None) -> tuple[int, int, int]:
    """(busy, softirq, total) jiffies of ``cpus`` (all CPUs when None), from
    /proc/stat. Busy counts every process on the cores, ours or not, and the
    kernel's softirq work (loopback TCP input is partly done there)."""
    busy = soft = total = 0
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *vals = line.split()
            if cpus is not None and int(name[3:]) not in cpus:
                continue
            v = [int(x) for x in vals[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(v)
            busy += sum(v) - v[3] - v[4]
            soft += v[6]
    return busy, soft, total


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def pin(cpus: set[int] | None) -> None:
    if cpus:
        try:
            os.sched_setaffinity(0, cpus)
        except OSError as exc:
            log.warning("cannot pin to CPUs %s: %s", sorted(cpus), exc)


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --------------------------------------------------------------------------
# The raw client
# --------------------------------------------------------------------------
class Stats:
    """Counters of one client process (shared by all its connections)."""

    __slots__ = ("actions", "bytes", "closes", "delivered", "frames", "last_seq", "lost",
                 "regressions", "samples", "timeline")

    def __init__(self) -> None:
        self.delivered = 0
        self.actions = 0
        self.frames = 0
        self.bytes = 0
        self.lost = 0
        self.closes: dict[int, int] = {}
        self.samples: list[float] = []
        # State mode, probes only: the last value seen per probe connection,
        # and how often a probe saw an older value after a newer one.
        self.last_seq: dict[int, int] = {}
        self.regressions = 0
        # (wall time, delivered, frames, bytes, actions), cumulative, every 20 ms
        self.timeline: list[tuple[float, int, int, int, int]] = []


_HTTP, _OPEN, _CONNECT, _JOIN, _JOINED = range(5)


class WsClient(asyncio.Protocol):
    """One viewer (or the publisher) on a raw transport. Setup (upgrade,
    hello/join or the Engine.IO handshake) takes the slow road; once joined,
    ``data_received`` only walks frame headers and counts the bench marker."""

    __slots__ = ("all_marker", "codec", "joined", "marker", "mode", "phase", "probe",
                 "request", "rest", "stats", "token", "transport")

    def __init__(self, mode: str, codec: str, request: bytes, token: str, probe: bool,
                 stats: Stats, joined: asyncio.Future[None]) -> None:
        self.mode = mode
        self.codec = codec
        self.request = request
        self.token = token
        self.probe = probe
        self.stats = stats
        self.joined = joined
        self.marker = BENCH_MARK[codec]
        self.all_marker = ACTION_MARK[codec]
        self.phase = _HTTP
        self.rest = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.phase == _JOINED:
            self.stats.lost += 1
        elif not self.joined.done():
            self.joined.set_exception(ConnectionError(f"closed during setup: {exc}"))

    def send(self, frame: bytes) -> None:
        assert self.transport is not None
        self.transport.write(frame)

    def data_received(self, data: bytes) -> None:
        if self.rest:
            data = self.rest + data
            self.rest = b""
        if self.phase != _JOINED:
            data = self._setup(data)
            if not data:
                return
        # The hot path: walk the headers of the complete frames, handle the
        # rare control frame, then count the marker once over all of them.
        n = len(data)
        pos = 0
        frames = 0
        while n - pos >= 2:
            size = data[pos + 1]  # server frames are unmasked: the length is the byte
            if size < 126:
                start = pos + 2
            elif size == 126:
                if n - pos < 4:
                    break
                start = pos + 4
                size = (data[pos + 2] << 8) | data[pos + 3]
            else:
                if n - pos < 10:
                    break
                start = pos + 10
                size = int.from_bytes(data[pos + 2:start], "big")
            end = start + size
            if end > n:
                break
            op = data[pos] & 0x0F
            if op > OP_BINARY or size == 1:
                # A control frame, or a one-byte Engine.IO packet (the "2" ping).
                self._control(op, data[start:end])
            elif self.probe:
                self._sample(data[start:end])
            frames += 1
            pos = end
        if pos:
            stats = self.stats
            stats.delivered += data.count(self.marker, 0, pos)
            stats.actions += data.count(self.all_marker, 0, pos)
            stats.frames += frames
            stats.bytes += pos
        if pos < n:
            self.rest = data[pos:]

    def _control(self, op: int, payload: bytes) -> None:
        if op == OP_PING:
            self.send(client_frame(payload, OP_PONG))
        elif op == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.stats.closes[code] = self.stats.closes.get(code, 0) + 1
            if self.transport is not None:
                self.transport.close()
        elif op == OP_TEXT and payload == b"2":
            self.send(client_frame(b"3"))  # Engine.IO pong

    def _sample(self, payload: bytes) -> None:
        """Latency of every measured message in one frame (probe connections)."""
        now = time.time()
        messages: list[Any]
        try:
            if self.mode == SOCKETIO:
                if not payload.startswith(b"42"):
                    return
                messages = [json.loads(payload[2:])[1]]
            else:
                obj = (msgpack.unpackb(payload, raw=False) if self.codec == MSGPACK
                       else json.loads(payload))
                messages = obj["frames"] if obj.get("type") == "batch" else [obj]
        except (ValueError, KeyError, IndexError, TypeError):
            return
        samples = self.stats.samples
        for m in messages:
            if not isinstance(m, dict):
                continue
            if m.get("type") == "state":
                # State mode: the bench fields ride in the section's value.
                value = m.get("value")
                if isinstance(value, dict) and value.get("kind") == "bench":
                    samples.append(now - value["t"])
                    last = self.stats.last_seq.get(id(self), 0)
                    if value["s"] < last:
                        self.stats.regressions += 1
                    self.stats.last_seq[id(self)] = max(last, value["s"])
            elif m.get("kind") == "bench":
                samples.append(now - m["body"]["t"])

    # -- setup (slow road) -----------------------------------------------
    def _fail(self, why: str) -> None:
        if not self.joined.done():
            self.joined.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    def _setup(self, data: bytes) -> bytes:
        """Advance the handshake; returns the bytes that follow the join."""
        if self.phase == _HTTP:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.rest = data
                return b""
            status = data[:data.find(b"\r\n")]
            if status.split()[1:2] != [b"101"]:
                self._fail(f"upgrade refused: {status.decode(errors='replace')}")
                return b""
            data = data[end + 4:]
            if self.mode == LIVEROOM:
                self.send(encode_liveroom({"type": "hello", "token": self.token, "v": 1},
                                          self.codec)
                          + encode_liveroom({"type": "join", "room": ROOM}, self.codec))
                self.phase = _JOIN
            else:
                self.phase = _OPEN
        pos = 0
        n = len(data)
        while n - pos >= 2:
            size = data[pos + 1]
            start = pos + 2
            if size == 126:
                if n - pos < 4:
                    break
                size, start = int.from_bytes(data[pos + 2:pos + 4], "big"), pos + 4
            elif size == 127:
                if n - pos < 10:
                    break
                size, start = int.from_bytes(data[pos + 2:pos + 10], "big"), pos + 10
            end = start + size
            if end > n:
                break
            op = data[pos] & 0x0F
            payload = data[start:end]
            pos = end
            if op > OP_BINARY:
                self._control(op, payload)
                if op == OP_CLOSE:
                    self._fail(f"closed by the server during setup: {payload[2:]!r}")
                    return b""
                continue
            if self._setup_frame(payload):
                self.phase = _JOINED
                self.joined.set_result(None)
                return data[pos:]
        self.rest = data[pos:]
        return b""

    def _setup_frame(self, payload: bytes) -> bool:
        """One data frame during setup; True once joined."""
        if self.mode == LIVEROOM:
            if JOINED_MARK[self.codec] in payload:
                return True
            if ERROR_MARK[self.codec] in payload:
                self._fail(f"error from the server: {payload[:300]!r}")
            return False
        if payload == b"2":
            self.send(client_frame(b"3"))
        elif self.phase == _OPEN and payload.startswith(b"0"):
            self.send(client_frame(b"40"))
            self.phase = _CONNECT
        elif self.phase == _CONNECT and payload.startswith(b"40"):
            self.send(encode_socketio_event("join", ROOM, ack=1))
            self.phase = _JOIN
        elif payload.startswith(b"44"):
            self._fail(f"socket.io connect refused: {payload[:300]!r}")
        elif self.phase == _JOIN and payload.startswith(b"431"):
            return True
        return False


# --------------------------------------------------------------------------
# Client processes
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class ClientSpec:
    mode: str
    host: str
    port: int
    path: str
    codec: str
    secret: str
    first: int  # global index of the first viewer of this process
    count: int
    probe_stride: int
    cpus: frozenset[int] | None
    role: str = "viewer"
    state: bool = False  # publish state changes of section STATE_SECTION, not actions


def _token(spec: ClientSpec, index: int) -> str:
    if spec.mode != LIVEROOM:
        return ""
    from edge.auth import mint_token
    user = f"{'pub' if spec.role != 'viewer' else 'v'}{index}"
    return mint_token(spec.secret, user, user, spec.role, time.time(), 3600.0)


async def _open(spec: ClientSpec, index: int, stats: Stats,
                sem: asyncio.Semaphore) -> WsClient:
    loop = asyncio.get_running_loop()
    joined: asyncio.Future[None] = loop.create_future()
    probe = spec.probe_stride > 0 and index % spec.probe_stride == 0
    request = upgrade_request(spec.host, spec.port, spec.path)
    token = _token(spec, index)
    async with sem:
        for attempt in range(3):
            try:
                _, proto = await loop.create_connection(
                    lambda: WsClient(spec.mode, spec.codec, request, token, probe, stats,
                                     joined), spec.host, spec.port)
                break
            except OSError:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2)
        await asyncio.wait_for(joined, 30.0)
    return proto


class _Commands:
    """The parent's commands, read from the pipe by the event loop."""

    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop.add_reader(pipe.fileno(), self._readable)
        # uvloop's add_reader makes the fd non-blocking; Connection.send
        # expects a blocking one (a result bigger than the socket buffer
        # would fail with EAGAIN). Reads only happen when it is readable.
        os.set_blocking(pipe.fileno(), True)

    def _readable(self) -> None:
        try:
            while self.pipe.poll():
                self.queue.put_nowait(self.pipe.recv())
        except (EOFError, OSError):
            self.queue.put_nowait(("stop",))
            asyncio.get_running_loop().remove_reader(self.pipe.fileno())


async def _viewers_main(spec: ClientSpec, pipe: Connection) -> None:
    stats = Stats()
    loop = asyncio.get_running_loop()
    commands = _Commands(pipe)

    def tick() -> None:
        stats.timeline.append((time.time(), stats.delivered, stats.frames, stats.bytes,
                               stats.actions))
        loop.call_later(0.02, tick)

    tick()
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    results = await asyncio.gather(
        *(_open(spec, spec.first + i, stats, sem) for i in range(spec.count)),
        return_exceptions=True)
    clients = [r for r in results if isinstance(r, WsClient)]
    errors = [repr(r) for r in results if not isinstance(r, WsClient)]
    pipe.send(("ready", len(clients), errors[:3]))
    while True:
        cmd = await commands.queue.get()
        if cmd[0] == "count":
            pipe.send(("count", stats.delivered))
        elif cmd[0] == "stop":
            break
    stats.timeline.append((time.time(), stats.delivered, stats.frames, stats.bytes,
                               stats.actions))
    pipe.send(("result", {
        "last_seq": list(stats.last_seq.values()), "regressions": stats.regressions,
        "timeline": stats.timeline, "samples": stats.samples, "lost": stats.lost,
        "delivered": stats.delivered, "frames": stats.frames, "bytes": stats.bytes,
        "closes": stats.closes,
    }))
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0.05)


async def _publisher_main(spec: ClientSpec, pipe: Connection) -> None:
    """One host connection in the room; on ("go", ...) publishes open loop."""
    stats = Stats()
    commands = _Commands(pipe)
    try:
        client = await _open(spec, 0, stats, asyncio.Semaphore(1))
    except Exception as exc:
        pipe.send(("ready", 0, [repr(exc)]))
        return
    pipe.send(("ready", 1, []))
    while True:
        cmd = await commands.queue.get()
        if cmd[0] == "go":
            _, t_start, t0, t1, msg_rate, pad_len = cmd
            sent = await _publish(client, spec, t_start, t0, t1, msg_rate, "x" * pad_len)
            pipe.send(("published", sent))
        elif cmd[0] == "stop":
            break
    pipe.send(("result", {"received": stats.delivered}))
    if client.transport is not None:
        client.transport.close()
    await asyncio.sleep(0.05)


def _action_frame(spec: ClientSpec, kind: str, body: dict[str, Any]) -> bytes:
    if spec.state:
        # The value carries the bench fields, so a viewer counts it with the
        # same marker as an action (``"kind":"bench"``).
        return encode_liveroom({"type": "state", "room": ROOM, "section": STATE_SECTION,
                                "value": {"kind": kind, **body}}, spec.codec)
    if spec.mode == LIVEROOM:
        return encode_liveroom({"type": "action", "room": ROOM, "kind": kind, "body": body},
                               spec.codec)
    return encode_socketio_event("action", {"room": ROOM, "kind": kind, "body": body})


async def _publish(client: WsClient, spec: ClientSpec, t_start: float, t0: float, t1: float,
                   msg_rate: float, pad: str) -> dict[str, Any]:
    """Send ``msg_rate`` messages per second from ``t_start`` to ``t1``: kind
    ``warm`` before ``t0``, ``bench`` after. Each 1 ms tick sends what is due
    in one write, so a late tick catches up instead of lowering the rate."""
    await asyncio.sleep(max(0.0, t_start - time.time()))
    seq = warm = bench = 0
    first_bench = last_bench = 0.0
    while True:
        now = time.time()
        if now >= t1:
            break
        due = int((now - t_start) * msg_rate) - seq
        if due > 0:
            kind = "warm" if now < t0 else "bench"
            frames = []
            for _ in range(due):
                seq += 1
                frames.append(_action_frame(spec, kind, {"t": time.time(), "s": seq, "p": pad}))
            client.send(b"".join(frames))
            if kind == "bench":
                bench += due
                if not first_bench:
                    first_bench = now
                last_bench = now
            else:
                warm += due
        await asyncio.sleep(0.001)
    return {"warm": warm, "bench": bench, "first_bench": first_bench,
            "last_bench": last_bench}


def _client_process(spec: ClientSpec, pipe: Connection, publisher: bool) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pin(set(spec.cpus) if spec.cpus else None)
    raise_nofile(spec.count + 256)
    install_uvloop()
    asyncio.run(_publisher_main(spec, pipe) if publisher else _viewers_main(spec, pipe))


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------
class ServerProcess:
    """A server child process, pinned, whose log line gives its port."""

    def __init__(self, cmd: list[str], env: dict[str, str], cpus: set[int] | None) -> None:
        self.cmd = cmd
        self.env = env
        self.cpus = cpus
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.log: list[str] = []
        self._ready = threading.Event()

    def start(self, timeout: float = 20.0) -> ServerProcess:
        cpus = self.cpus
        preexec: Callable[[], None] | None = None
        if cpus:
            def preexec() -> None:
                os.sched_setaffinity(0, cpus)
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, text=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=preexec)
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.log[-30:]))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            if len(self.log) > 500:
                del self.log[:100]
            m = _LISTENING.search(line)
            if m and not self._ready.is_set():
                self.port = int(m.group(2))
                self._ready.set()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_liveroom(args: argparse.Namespace, data_dir: str, secret: str,
                   cpus: set[int] | None) -> ServerProcess:
    env = {**os.environ, "LIVEROOM_JWT_SECRET": secret,
           "LIVEROOM_API_KEY": "bench-api-key", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "liveroom.cli", "serve", "--host", "127.0.0.1",
           "--port", "0", "--no-demo-room", "--data-dir", data_dir,
           "--coalesce-window", str(args.coalesce_window),
           "--action-rate", "1e9", "--action-burst", "1000000000",
           # One publisher connection offers the whole rate: no frame budget.
           "--frame-rate", "1e9", "--frame-burst", "1000000000",
           "--outbound-budget", str(args.outbound_budget)]
    cmd += agent_args(args)
    return ServerProcess(cmd, env, cpus).start()


AGENT_CHARACTERS = REPO / "loadtest" / "characters"


def agent_args(args: argparse.Namespace) -> list[str]:
    """``--agents N``: N commentators (loadtest/characters/) sit in the bench
    room and talk without pause, their replies streaming as agent.delta
    actions to every viewer. The model is ``--agent-backend``: scripted at
    ``--agent-word-delay`` (0.012 s, the embedded model's ~85 tokens/s) keeps
    the edge's side of the work (a member reading every action, deltas,
    stage writes) without a model on the server's core; in production the
    model runs on its own host (vLLM), never in the edge."""
    if not args.agents:
        return ["--no-agents"]
    names = sorted(p.stem for p in AGENT_CHARACTERS.glob("*.toml"))[: args.agents]
    return ["--agent-room", ROOM, "--characters", str(AGENT_CHARACTERS),
            "--agent-characters", ",".join(names), "--agent-backend", args.agent_backend,
            "--agent-word-delay", str(args.agent_word_delay), "--agent-cooldown", "0",
            "--quota-room-per-day", "0", "--quota-user-per-day", "0",
            *(["--openai-base-url", args.agent_openai_url] if args.agent_openai_url else [])]


def start_socketio(cpus: set[int] | None) -> ServerProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "loadtest.bench_fanout", "--serve-socketio", "0"]
    return ServerProcess(cmd, env, cpus).start()


def serve_socketio(port: int) -> None:
    """The peer: python-socketio on aiohttp + uvloop, written the way its
    documentation shows. A client joins a room with an acknowledged ``join``
    event; an ``action`` event is stamped like liveroom stamps an action and
    emitted to the room (python-socketio encodes it once per emit)."""
    import socketio  # type: ignore[import-untyped]
    from aiohttp import web

    install_uvloop()
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
    app = web.Application()
    sio.attach(app)
    seq = 0
    sender = {"id": "pub0", "name": "pub0", "role": "host"}

    @sio.on("join")  # type: ignore[untyped-decorator]
    async def on_join(sid: str, room: str) -> str:
        await sio.enter_room(sid, room)
        return "ok"

    @sio.on("action")  # type: ignore[untyped-decorator]
    async def on_action(sid: str, data: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        room = data["room"]
        await sio.emit("action", {"type": "action", "room": room, "kind": data["kind"],
                                  "body": data["body"], "from": sender, "seq": seq,
                                  "ts": time.time()}, room=room)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        bound = int(runner.addresses[0][1])
        print(f"listening on http://127.0.0.1:{bound} (python-socketio)", file=sys.stderr,
              flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


# --------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------
@dataclass
class Target:
    mode: str
    host: str
    port: int
    path: str
    pid: int | None  # the server's, when known: CPU and RSS readings


@dataclass
class Clients:
    viewers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = field(
        default_factory=list)
    publisher: tuple[multiprocessing.process.BaseProcess, Connection] | None = None

    def all(self) -> list[tuple[multiprocessing.process.BaseProcess, Connection]]:
        return self.viewers + ([self.publisher] if self.publisher else [])


def _recv(pipe: Connection, timeout: float, what: str) -> tuple[Any, ...]:
    if not pipe.poll(timeout):
        raise TimeoutError(f"no {what} from a client process within {timeout:.0f} s")
    msg: tuple[Any, ...] = pipe.recv()
    return msg


def _interpolate(timeline: list[list[float]], t: float, col: int) -> float:
    """Column ``col`` of a cumulative timeline, at wall time ``t``."""
    if not timeline:
        return 0.0
    i = bisect.bisect_left([x[0] for x in timeline], t)
    if i == 0:
        return float(timeline[0][col]) if t >= timeline[0][0] else 0.0
    if i >= len(timeline):
        return float(timeline[-1][col])
    a, b = timeline[i - 1], timeline[i]
    return a[col] + (b[col] - a[col]) * ((t - a[0]) / (b[0] - a[0]) if b[0] > a[0] else 1.0)


def _in_window(outs: list[dict[str, Any]], t0: float, t1: float, col: int) -> float:
    """Sum over the viewer processes of column ``col`` gained between t0 and t1."""
    return sum(_interpolate(o["timeline"], t1, col) - _interpolate(o["timeline"], t0, col)
               for o in outs)


def run_one(args: argparse.Namespace, target: Target, secret: str,
            server_cpus: set[int] | None, client_cpus: set[int] | None) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    viewers = args.viewers
    nproc = max(1, min(args.clients, viewers))
    codec = args.codec if target.mode == LIVEROOM else JSON
    stride = max(1, viewers // PROBES)
    cpus = frozenset(client_cpus) if client_cpus else None
    clients = Clients()
    rss_before = rss_bytes(target.pid) if target.pid else 0
    result: dict[str, Any] = {
        "server": target.mode, "viewers": viewers, "clients": nproc, "codec": codec,
        "payload_bytes": args.payload_bytes, "duration_s": args.duration,
        "warmup_s": args.warmup,
        "coalesce_window_s": args.coalesce_window if target.mode == LIVEROOM else None,
        "offered_target_per_s": args.rate,
    }
    try:
        t_connect = time.time()
        first = 0
        for k in range(nproc):
            count = viewers // nproc + (1 if k < viewers % nproc else 0)
            spec = ClientSpec(target.mode, target.host, target.port, target.path, codec,
                              secret, first, count, stride, cpus)
            first += count
            parent_end, child_end = ctx.Pipe()
            p = ctx.Process(target=_client_process, args=(spec, child_end, False), daemon=True)
            p.start()
            child_end.close()
            clients.viewers.append((p, parent_end))
        joined = 0
        errors: list[str] = []
        setup_timeout = 60.0 + viewers / 100
        for _, pipe in clients.viewers:
            msg = _recv(pipe, setup_timeout, "ready")
            joined += msg[1]
            errors += msg[2]
        log.info("%s: %d/%d viewers joined in %.1f s%s", target.mode, joined, viewers,
                 time.time() - t_connect, f" (errors: {errors})" if errors else "")
        if joined == 0:
            raise RuntimeError(f"no viewer could join: {errors}")
        time.sleep(0.3)  # let the server settle (and free the handshakes' garbage)
        rss_after = rss_bytes(target.pid) if target.pid else 0

        pub_spec = ClientSpec(target.mode, target.host, target.port, target.path, codec,
                              secret, 0, 1, 0, cpus, role="host", state=bool(args.state_hz))
        parent_end, child_end = ctx.Pipe()
        p = ctx.Process(target=_client_process, args=(pub_spec, child_end, True), daemon=True)
        p.start()
        child_end.close()
        clients.publisher = (p, parent_end)
        msg = _recv(parent_end, 30.0, "ready")
        if msg[1] != 1:
            raise RuntimeError(f"the publisher could not join: {msg[2]}")

        msg_rate = args.state_hz or args.rate / viewers
        t_start = time.time() + 0.2
        t0 = t_start + args.warmup
        t1 = t0 + args.duration
        parent_end.send(("go", t_start, t0, t1, msg_rate, args.payload_bytes))
        pids = {"server": target.pid, "publisher": p.pid,
                "viewers": [vp.pid for vp, _ in clients.viewers]}
        time.sleep(max(0.0, t0 - time.time()))
        cpu0 = _cpu_snapshot(pids)
        cores0 = core_ticks(server_cpus), core_ticks(client_cpus)
        w0 = time.time()
        time.sleep(max(0.0, t1 - time.time()))
        cpu1 = _cpu_snapshot(pids)
        cores1 = core_ticks(server_cpus), core_ticks(client_cpus)
        w1 = time.time()
        published = _recv(parent_end, 30.0, "published")[1]

        # Drain: until every expected delivery arrived, bounded.
        expected = published["bench"] * joined
        drain_start = time.time()
        delivered_total = 0
        while True:
            delivered_total = 0
            for _, pipe in clients.viewers:
                pipe.send(("count",))
            for _, pipe in clients.viewers:
                delivered_total += _recv(pipe, 10.0, "count")[1]
            if delivered_total >= expected or time.time() - drain_start >= args.drain:
                break
            time.sleep(0.05)
        drain_s = time.time() - drain_start
        rss_end = rss_bytes(target.pid) if target.pid else 0

        outs = []
        for _, pipe in clients.all():
            pipe.send(("stop",))
        for _, pipe in clients.viewers:
            outs.append(_recv(pipe, 30.0, "result")[1])
    finally:
        _stop_clients(clients)

    samples = sorted(s * 1000.0 for out in outs for s in out["samples"])
    in_window = _in_window(outs, t0, t1, 1)
    frames_in_window = _in_window(outs, t0, t1, 2)
    bytes_in_window = _in_window(outs, t0, t1, 3)
    actions_in_window = _in_window(outs, t0, t1, 4)
    delivered_total = sum(o["delivered"] for o in outs)
    wall = w1 - w0
    server_cpu = (cpu1["server"] - cpu0["server"]) / wall if target.pid else None
    client_cpu_s = cpu1["clients"] - cpu0["clients"]
    n_client_cores = len(client_cpus) if client_cpus else (os.cpu_count() or 1)
    client_cpu = client_cpu_s / wall / n_client_cores
    (sb0, ss0, st0), (cb0, _, ct0) = cores0
    (sb1, ss1, st1), (cb1, _, ct1) = cores1
    server_core_busy = (sb1 - sb0) / (st1 - st0) if st1 > st0 else 0.0
    client_core_busy = (cb1 - cb0) / (ct1 - ct0) if ct1 > ct0 else 0.0
    server_softirq = (ss1 - ss0) / (st1 - st0) if st1 > st0 else 0.0
    # What ran on the server's core besides the server and softirq: other
    # processes of the machine. Figures from a run with much of it are noise.
    server_core_other = (max(0.0, server_core_busy - server_cpu - server_softirq)
                         if server_cpus and server_cpu is not None else None)
    if server_core_other is not None and server_core_other > 0.1:
        log.warning("%s: other processes used %.0f%% of the server's core during the run",
                    target.mode, 100 * server_core_other)
    closes: dict[str, int] = {}
    for o in outs:
        for code, n in o["closes"].items():
            closes[str(code)] = closes.get(str(code), 0) + n
    delivered_per_s = in_window / args.duration
    if args.state_hz:
        # Latest-wins: a viewer that falls behind gets the newest value, not
        # every value, so "loss" is expected there; what must hold is that
        # no probe ever went back to an older value and every probe ended on
        # the last one published.
        last = published["warm"] + published["bench"]
        finals = [s for o in outs for s in o["last_seq"]]
        result["state"] = {
            "section": STATE_SECTION, "hz": args.state_hz, "last_published": last,
            "probes": len(finals),
            "probes_ending_on_last": sum(1 for s in finals if s == last),
            "regressions": sum(o["regressions"] for o in outs),
        }
    result.update({
        "viewers_joined": joined,
        "messages_per_s": round(published["bench"] / args.duration, 1),
        "offered_per_s": round(published["bench"] * joined / args.duration, 1),
        "delivered_per_s": round(delivered_per_s, 1),
        "delivered_total": delivered_total,
        "expected_total": expected,
        "loss": round(min(1.0, max(0.0, 1.0 - delivered_total / expected)), 6)
        if expected else 0.0,
        "drain_s": round(drain_s, 3),
        "latency_ms": {
            "p50": round(percentile(samples, 0.50), 3),
            "p90": round(percentile(samples, 0.90), 3),
            "p99": round(percentile(samples, 0.99), 3),
            "p99.9": round(percentile(samples, 0.999), 3),
            "max": round(samples[-1], 3) if samples else float("nan"),
            "samples": len(samples),
        },
        # Averages over the measured window (batch frames make the first > 1).
        # Every action the viewers got in the window, warm-up backlog included.
        "delivered_all_per_s": round(actions_in_window / args.duration, 1),
        "messages_per_frame": round(actions_in_window / frames_in_window, 2)
        if frames_in_window else None,
        "wire_bytes_per_delivery": round(bytes_in_window / actions_in_window, 1)
        if actions_in_window else None,
        "connections_lost": sum(o["lost"] for o in outs),
        "close_codes": closes,
        "server_rss_mb": round(rss_after / 2**20, 1) if target.pid else None,
        # After the drain: growth here is what queued in the server's buffers.
        "server_rss_end_mb": round(rss_end / 2**20, 1) if target.pid else None,
        "rss_per_connection": round((rss_after - rss_before) / joined) if target.pid else None,
        "server_cpu": round(server_cpu, 3) if server_cpu is not None else None,
        # The kernel's share: on loopback the sender's send() also runs the
        # receiver's TCP input, so most of a write's cost shows up here.
        "server_cpu_sys": round((cpu1["server_sys"] - cpu0["server_sys"]) / wall, 3)
        if target.pid else None,
        "server_us_per_delivery": round((cpu1["server"] - cpu0["server"]) * 1e6 / in_window, 3)
        if target.pid and in_window else None,
        "client_cpu": round(client_cpu, 3),
        "client_cpu_cores": n_client_cores,
        "publisher_cpu": round((cpu1["publisher"] - cpu0["publisher"]) / wall, 3),
        # Whole-core view (/proc/stat): every process and softirq on the cores.
        "server_core_busy": round(server_core_busy, 3) if server_cpus else None,
        "server_core_softirq": round(server_softirq, 3) if server_cpus else None,
        "server_core_other": round(server_core_other, 3)
        if server_core_other is not None else None,
        "client_core_busy": round(client_core_busy, 3) if client_cpus else None,
        "server_saturated": bool(server_cpu is not None and server_cpu > SATURATED)
        or bool(server_cpus and target.pid and server_core_busy > SATURATED),
        "client_saturated": client_cpu > SATURATED
        or bool(client_cpus and client_core_busy > SATURATED),
    })
    return result


def _cpu_snapshot(pids: dict[str, Any]) -> dict[str, float]:
    pub = cpu_seconds(pids["publisher"])
    server_user, server_sys = cpu_times(pids["server"]) if pids["server"] else (0.0, 0.0)
    return {
        "server": server_user + server_sys,
        "server_sys": server_sys,
        "publisher": pub,
        "clients": pub + sum(cpu_seconds(pid) for pid in pids["viewers"]),
    }


def _stop_clients(clients: Clients) -> None:
    for p, pipe in clients.all():
        p.join(5.0)
        if p.is_alive():
            p.terminate()
            p.join(5.0)
        pipe.close()


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    cpus = sorted(os.sched_getaffinity(0))
    server_default = str(cpus[0])
    client_default = ",".join(str(c) for c in cpus[1:]) or server_default
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_fanout",
                                description="Fan-out benchmark: prints one JSON line.")
    p.add_argument("--viewers", type=int, default=1000, help="viewer connections")
    p.add_argument("--rate", type=float, default=50_000.0,
                   help="offered deliveries per second (messages/s x viewers)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds (max 60)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds published before")
    p.add_argument("--drain", type=float, default=2.0,
                   help="at most this many seconds to wait for late deliveries")
    p.add_argument("--coalesce-window", type=float, default=0.005)
    p.add_argument("--outbound-budget", type=int, default=64 << 20,
                   help="the edge's per-connection budget; big, so that nothing is shed")
    p.add_argument("--clients", type=int, default=1, help="viewer processes")
    p.add_argument("--codec", choices=(JSON, MSGPACK), default=JSON,
                   help="the viewers' wire variant (the socket.io peer always uses JSON)")
    p.add_argument("--payload-bytes", type=int, default=100,
                   help="padding in each message body")
    p.add_argument("--url", help="attach to a running edge (ws://host:port/ws) instead of "
                                 "starting one; tokens use $LIVEROOM_JWT_SECRET")
    p.add_argument("--server-pid", type=int,
                   help="with --url: the edge's pid, for its CPU and RSS")
    p.add_argument("--state-hz", type=float, default=0.0,
                   help="publish changes of the room's 'stage' section at this rate instead of "
                        "actions (latest-wins state; --rate is then ignored)")
    p.add_argument("--find-max", action="store_true",
                   help="search for the highest offered rate kept up with (loss <= 0.1%% and "
                        "p99 <= --max-p99): from --rate up by x1.4 per trial, then one step "
                        "back by x1.15; prints the trials and the best")
    p.add_argument("--max-p99", type=float, default=100.0,
                   help="ms; with --find-max, the latency a kept-up run may not exceed")
    p.add_argument("--peer-rate", type=float,
                   help="with --find-max and --peer: the peer's first offered rate "
                        "(default: --rate / 10)")
    p.add_argument("--peer", choices=(SOCKETIO,),
                   help="also run the same load against this server, and give the ratio")
    p.add_argument("--agents", type=int, default=0,
                   help="characters talking continuously in the room (loadtest/characters)")
    p.add_argument("--compare-agents", type=int, default=0, metavar="N",
                   help="run without characters, then with N, and give the p99 ratio")
    p.add_argument("--agent-backend", default="scripted",
                   choices=("scripted", "openai", "embedded"))
    p.add_argument("--agent-word-delay", type=float, default=0.012)
    p.add_argument("--agent-openai-url", help="with --agent-backend openai")
    p.add_argument("--server-cpu", default=server_default, help="CPU(s) for the server")
    p.add_argument("--client-cpu", default=client_default,
                   help="CPU(s) for the viewer and publisher processes")
    p.add_argument("--serve-socketio", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.serve_socketio is not None:
        serve_socketio(args.serve_socketio)
        return 0
    if args.find_max and (args.state_hz or args.url):
        raise SystemExit("--find-max starts its own servers and measures actions")
    if args.state_hz and args.peer:
        raise SystemExit("--state-hz measures liveroom's state path: no --peer")
    if args.viewers < 1 or args.rate <= 0 or not 0 < args.duration <= 60:
        raise SystemExit("need --viewers >= 1, --rate > 0 and 0 < --duration <= 60")
    raise_nofile(args.viewers + 1024)
    available = os.sched_getaffinity(0)
    server_cpus: set[int] | None = parse_cpus(args.server_cpu) & available
    client_cpus: set[int] | None = parse_cpus(args.client_cpu) & available
    if not server_cpus or not client_cpus or len(available) < 2:
        log.warning("not pinning: the server and the clients would share cores")
        server_cpus = client_cpus = None
    elif server_cpus & client_cpus:
        log.warning("server and clients share CPUs %s", sorted(server_cpus & client_cpus))
    pin(client_cpus)  # the parent and its children stay off the server's core

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as data_dir:
        if args.find_max:
            found: dict[str, Any] = {LIVEROOM: find_max(args, lambda: start_liveroom(
                args, data_dir, DEFAULT_SECRET, server_cpus), LIVEROOM, "/ws",
                DEFAULT_SECRET, server_cpus, client_cpus)}
            if args.peer == SOCKETIO:
                found[SOCKETIO] = find_max(args, lambda: start_socketio(server_cpus), SOCKETIO,
                                         "/socket.io/?EIO=4&transport=websocket", "",
                                         server_cpus, client_cpus)
                found["ratio_max"] = _ratio(found[LIVEROOM]["max_kept_up_per_s"],
                                            found[SOCKETIO]["max_kept_up_per_s"])
            print(json.dumps(_finite(found), allow_nan=False), flush=True)
            return 0
        if args.url:
            secret = os.environ.get("LIVEROOM_JWT_SECRET")
            if not secret:
                raise SystemExit("--url needs LIVEROOM_JWT_SECRET (the edge's secret)")
            u = urlsplit(args.url)
            target = Target(LIVEROOM, u.hostname or "127.0.0.1", u.port or 80,
                            u.path or "/ws", args.server_pid)
            results[LIVEROOM] = run_one(args, target, secret, server_cpus, client_cpus)
        elif args.compare_agents:
            for key, n in (("without_agents", 0), ("with_agents", args.compare_agents)):
                args.agents = n
                srv = start_liveroom(args, f"{data_dir}/{key}", DEFAULT_SECRET, server_cpus)
                try:
                    target = Target(LIVEROOM, "127.0.0.1", srv.port, "/ws", srv.pid)
                    results[key] = run_one(args, target, DEFAULT_SECRET, server_cpus,
                                           client_cpus)
                    results[key]["agents"] = n
                finally:
                    srv.stop()
        else:
            srv = start_liveroom(args, data_dir, DEFAULT_SECRET, server_cpus)
            try:
                target = Target(LIVEROOM, "127.0.0.1", srv.port, "/ws", srv.pid)
                results[LIVEROOM] = run_one(args, target, DEFAULT_SECRET, server_cpus, client_cpus)
                results[LIVEROOM]["agents"] = args.agents
            finally:
                srv.stop()
        if args.peer == SOCKETIO:
            srv = start_socketio(server_cpus)
            try:
                target = Target(SOCKETIO, "127.0.0.1", srv.port,
                                "/socket.io/?EIO=4&transport=websocket", srv.pid)
                results[SOCKETIO] = run_one(args, target, "", server_cpus, client_cpus)
            finally:
                srv.stop()
    if args.compare_agents:
        base, loaded = results["without_agents"], results["with_agents"]
        out: dict[str, Any] = {
            **results, "agent_backend": args.agent_backend,
            "ratio_p99_latency": _ratio(loaded["latency_ms"]["p99"], base["latency_ms"]["p99"]),
            "ratio_p50_latency": _ratio(loaded["latency_ms"]["p50"], base["latency_ms"]["p50"]),
            # The agents' own words: actions beyond the bench ones, per second.
            "agent_actions_per_s": round(
                (loaded["delivered_all_per_s"] - loaded["delivered_per_s"])
                / max(1, loaded["viewers_joined"]), 1)}
    elif args.peer is None:
        out = results[LIVEROOM]
    else:
        ours, theirs = results[LIVEROOM], results[SOCKETIO]
        out = {LIVEROOM: ours, SOCKETIO: theirs,
               "ratio_delivered": _ratio(ours["delivered_per_s"], theirs["delivered_per_s"]),
               "ratio_server_cpu_per_delivery": _ratio(theirs["server_us_per_delivery"],
                                                       ours["server_us_per_delivery"]),
               "ratio_p99_latency": _ratio(theirs["latency_ms"]["p99"],
                                           ours["latency_ms"]["p99"])}
    print(json.dumps(_finite(out), allow_nan=False), flush=True)
    return 0


def kept_up(r: dict[str, Any], max_p99: float) -> bool:
    p99 = r["latency_ms"]["p99"]
    return (r["loss"] <= 0.001 and r["connections_lost"] == 0
            and isinstance(p99, float) and math.isfinite(p99) and p99 <= max_p99)


def find_max(args: argparse.Namespace, start: Callable[[], ServerProcess], mode: str,
             path: str, secret: str, server_cpus: set[int] | None,
             client_cpus: set[int] | None) -> dict[str, Any]:
    """The highest offered rate one server keeps up with: up by x1.4 from
    ``--rate`` until a trial fails, then one trial x1.15 above the last good
    one. A fresh server per trial, so no trial inherits another's backlog."""
    trials: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None

    def trial(rate: float) -> bool:
        nonlocal best
        srv = start()
        try:
            target = Target(mode, "127.0.0.1", srv.port, path, srv.pid)
            r = run_one(argparse.Namespace(**{**vars(args), "rate": rate}), target, secret,
                        server_cpus, client_cpus)
        finally:
            srv.stop()
        ok = kept_up(r, args.max_p99)
        trials.append({"offered_per_s": r["offered_per_s"], "delivered_per_s":
                       r["delivered_per_s"], "loss": r["loss"], "p99_ms": r["latency_ms"]["p99"],
                       "server_us_per_delivery": r["server_us_per_delivery"],
                       "messages_per_frame": r["messages_per_frame"],
                       "server_saturated": r["server_saturated"],
                       "client_saturated": r["client_saturated"], "kept_up": ok})
        if ok:
            best = r
        return ok

    rate = args.rate if mode == LIVEROOM else (args.peer_rate or args.rate / 10)
    good = 0.0
    for _ in range(12):
        if not trial(rate):
            break
        good = rate
        rate *= 1.4
    if good and trial(good * 1.15):
        good *= 1.15
    return {"server": mode, "viewers": args.viewers, "max_p99_ms": args.max_p99,
            "max_kept_up_per_s": best["delivered_per_s"] if best else 0.0,
            "at_offered_per_s": round(good * 1.0, 1), "best": best, "trials": trials}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 2)


def _finite(obj: Any) -> Any:
    """NaN (no latency sample) becomes null: the line must stay strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


if __name__ == "__main__":
    sys.exit(main())
