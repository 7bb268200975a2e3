"""The hub's write loop over real loopback sockets, in process: the send loop
in C (edge/_sendloop.c) against the Python loop, with nothing else in the way.

    python -m loadtest.bench_sendloop --members 1000 --rounds 60

prints one JSON line. Theory of operation: one uvloop loop holds M server-side
transports of M loopback connections whose client ends are bare sockets in
the same process; a ``Hub`` with one room of M ``Conn`` members (over
``WsSink``, as the edge builds them) broadcasts ``--per-round`` frames of
``--frame-bytes`` per round, timed with ``perf_counter``; between rounds,
untimed, every client socket is read empty. Nobody waits in ``epoll_wait`` on
the client sockets, so no send pays a reader's wake-up: what remains is the
loop's own cost plus the kernel's send (and the loopback's receive) of each
frame, the floor of ``loadtest.bench_fanout`` where it writes one frame per
delivery. The loops alternate round by round, so a drift of the machine
touches both; ``us_per_delivery`` is the median of the rounds and ``min`` the
best (the least disturbed). Pin it with ``taskset -c 0`` on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time
from typing import Any

import uvloop

from edge.fanout import Budget, Conn, Hub
from edge.ws import WsSink
from loadtest.procstat import raise_nofile
from wire.codecs import JSON, Variant
from wire.frames import Priority


class _Frame:
    """An ``Outgoing`` of one pre-framed payload."""

    def __init__(self, frame: bytes) -> None:
        self.frame = frame

    def frame_from(self, floor: Priority, variant: Variant) -> bytes | None:
        return self.frame


class _Accept(asyncio.Protocol):
    def __init__(self, made: list[asyncio.Transport]) -> None:
        self.made = made

    def connection_made(self, transport: Any) -> None:
        self.made.append(transport)


def _drain(sock: socket.socket) -> None:
    while True:
        try:
            if not sock.recv(1 << 16):
                return
        except BlockingIOError:
            return


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    made: list[asyncio.Transport] = []
    server = await loop.create_server(lambda: _Accept(made), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = []
    for _ in range(args.members):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        clients.append(sock)
    deadline = loop.time() + 30
    while len(made) < args.members:
        if loop.time() > deadline:
            raise SystemExit(f"only {len(made)} of {args.members} connections accepted")
        await asyncio.sleep(0.01)
    hubs = {name: Hub(c_send_loop=name == "c") for name in ("c", "python")}
    if hubs["c"].send_loop != "c":
        raise SystemExit("edge._sendloop is not built: pip install -e . with a C compiler")
    for hub in hubs.values():
        for i, transport in enumerate(made):
            conn = Conn(i, WsSink(transport, loop), Budget(bytes=1 << 30))
            conn.variant = JSON
            hub.join(conn, "r")
    # A server frame (text, 16-bit length) of --frame-bytes in all.
    size = args.frame_bytes - 4
    out = _Frame(bytes([0x81, 126]) + size.to_bytes(2, "big") + b"x" * size)
    times: dict[str, list[float]] = {name: [] for name in hubs}
    for _ in range(args.rounds):
        for name, hub in hubs.items():
            t0 = time.perf_counter()
            for _ in range(args.per_round):
                hub.broadcast("r", out, 0.0)  # type: ignore[arg-type]
            times[name].append((time.perf_counter() - t0) / (args.per_round * args.members))
            for sock in clients:
                _drain(sock)
            await asyncio.sleep(0)
    for sock in clients:
        sock.close()
    for transport in made:
        transport.abort()
    server.close()
    result: dict[str, Any] = {"members": args.members, "rounds": args.rounds,
                              "per_round": args.per_round, "frame_bytes": args.frame_bytes}
    for name, ts in times.items():
        result[name] = {"us_per_delivery": round(statistics.median(ts) * 1e6, 3),
                        "min": round(min(ts) * 1e6, 3)}
    result["saved_us_per_delivery"] = round(
        result["python"]["us_per_delivery"] - result["c"]["us_per_delivery"], 3)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_sendloop",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--members", type=int, default=1000, help="loopback connections (1..20000)")
    p.add_argument("--rounds", type=int, default=60, help="timed rounds per loop (1..10000)")
    p.add_argument("--per-round", type=int, default=10, help="broadcasts per round (1..100)")
    p.add_argument("--frame-bytes", type=int, default=304,
                   help="bytes of each frame on the wire (126..65535)")
    args = p.parse_args(argv)
    if not (1 <= args.members <= 20000 and 1 <= args.rounds <= 10000
            and 1 <= args.per_round <= 100 and 126 <= args.frame_bytes <= 65535):
        p.error("a value is out of its range (see --help)")
    raise_nofile(2 * args.members + 256)
    json.dump(uvloop.run(_run(args)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
