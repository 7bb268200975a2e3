"""The fan-out benchmark's client processes: viewers and the publisher.

The parent (``loadtest.bench_fanout``) spawns them pinned to the client
cores and talks to each over a pipe. A viewer process opens ``count``
connections (``loadtest.wsclient``), answers ``("ready", joined, errors)``,
keeps a timeline of its cumulative counters (every 20 ms, so the parent
reads the deliveries inside the measured window without a round trip),
answers ``("count",)`` during the drain, and sends its result on
``("stop",)``. The publisher joins the room as a host and, on ``("go",
...)``, sends at a fixed rate, open loop: it never waits for the server
(to nchan it POSTs over one keep-alive HTTP connection instead,
``loadtest.nchan_peer.HttpPublisher``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from loadtest.nchan_peer import HttpPublisher, publish_request
from loadtest.procstat import install_uvloop, pin, raise_nofile
from loadtest.wsclient import (
    LIVEROOM,
    NCHAN,
    ROOM,
    STATE_SECTION,
    Stats,
    WsClient,
    encode_liveroom,
    encode_socketio_event,
    upgrade_request,
)

# The sender nchan's messages carry, like the socket.io peer's.
SENDER = {"id": "pub0", "name": "pub0", "role": "host"}
# Connection attempts in flight per viewer process (the edge's listen backlog
# is aiohttp's default, 128).
CONNECT_CONCURRENCY = 64


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
    # The viewers' global indices when not ``first .. first + count - 1``
    # (loadtest.bench_cluster: the viewers the router sent to one edge).
    indices: tuple[int, ...] = ()

    def viewer_ids(self) -> range | tuple[int, ...]:
        return self.indices or range(self.first, self.first + self.count)


def _token(spec: ClientSpec, index: int) -> str:
    if spec.mode != LIVEROOM:
        return ""
    from edge.auth import mint_token, role_everywhere
    user = f"{'pub' if spec.role != 'viewer' else 'v'}{index}"
    role, rooms = role_everywhere(spec.role)
    return mint_token(spec.secret, user, user, role, time.time(), 3600.0, rooms)


async def _open(spec: ClientSpec, index: int, stats: Stats,
                sem: asyncio.Semaphore) -> WsClient | HttpPublisher:
    loop = asyncio.get_running_loop()
    joined: asyncio.Future[None] = loop.create_future()
    probe = spec.probe_stride > 0 and index % spec.probe_stride == 0
    request = upgrade_request(spec.host, spec.port, spec.path)
    token = _token(spec, index)

    def protocol() -> WsClient | HttpPublisher:
        if spec.mode == NCHAN and spec.role != "viewer":
            return HttpPublisher(joined)
        return WsClient(spec.mode, spec.codec, request, token, probe, stats, joined)

    async with sem:
        for attempt in range(3):
            try:
                _, proto = await loop.create_connection(protocol, spec.host, spec.port)
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
        *(_open(spec, i, stats, sem) for i in spec.viewer_ids()),
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
    if spec.mode == NCHAN:
        # nchan sends the body as it is: the object liveroom would deliver.
        return publish_request(spec.host, spec.port, spec.path, json.dumps(
            {"type": "action", "room": ROOM, "kind": kind, "body": body, "from": SENDER,
             "seq": body["s"], "ts": body["t"]}, separators=(",", ":")).encode())
    return encode_socketio_event("action", {"room": ROOM, "kind": kind, "body": body})


async def _publish(client: WsClient | HttpPublisher, spec: ClientSpec, t_start: float,
                   t0: float, t1: float, msg_rate: float, pad: str) -> dict[str, Any]:
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


def client_process(spec: ClientSpec, pipe: Connection, publisher: bool) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pin(set(spec.cpus) if spec.cpus else None)
    raise_nofile(spec.count + 256)
    install_uvloop()
    asyncio.run(_publisher_main(spec, pipe) if publisher else _viewers_main(spec, pipe))


# --------------------------------------------------------------------------
# The parent's side
# --------------------------------------------------------------------------
@dataclass
class Clients:
    """The parent's side: each client process with its end of the pipe."""

    viewers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = field(
        default_factory=list)
    publisher: tuple[multiprocessing.process.BaseProcess, Connection] | None = None

    def all(self) -> list[tuple[multiprocessing.process.BaseProcess, Connection]]:
        return self.viewers + ([self.publisher] if self.publisher else [])


def recv(pipe: Connection, timeout: float, what: str) -> tuple[Any, ...]:
    if not pipe.poll(timeout):
        raise TimeoutError(f"no {what} from a client process within {timeout:.0f} s")
    msg: tuple[Any, ...] = pipe.recv()
    return msg


def stop_clients(clients: Clients) -> None:
    for p, pipe in clients.all():
        p.join(5.0)
        if p.is_alive():
            p.terminate()
            p.join(5.0)
        pipe.close()
