"""The floor under any fan-out figure: the CPU cost of one small TCP send on loopback.

    python -m loadtest.bench_send_floor --connections 500 --bytes 280

A server that writes one frame per recipient pays at least one ``send()``
per delivery. On loopback that call also runs the receiver's TCP input (the
packet is delivered in the sender's context, as softirq on the sender's
core), so the cost a fan-out benchmark charges to the server per delivery can
never be lower than this. No event loop, no framing, no Python beyond the
call: plain blocking sockets, the receivers drained now and then so their
buffers never fill.

Prints one JSON line: the CPU microseconds (user + system) per send, with and
without the receivers' drain in the loop, and the number of sends measured.
Pin it with ``taskset`` to compare with a server pinned to one core.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time


def measure(connections: int, size: int, rounds: int) -> dict[str, float | int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    receivers: list[socket.socket] = []
    senders: list[socket.socket] = []
    try:
        for _ in range(connections):
            r = socket.create_connection(("127.0.0.1", port))
            r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            receivers.append(r)
            s, _ = listener.accept()
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as aiohttp does
            senders.append(s)
        payload = b"x" * size

        def drain() -> None:
            for r in receivers:
                r.recv(8 << 20)

        # Sends only: drained between two timed blocks, never inside one.
        send_only = 0.0
        for _ in range(rounds):
            t = time.process_time()
            for _ in range(10):
                for s in senders:
                    s.send(payload)
            send_only += time.process_time() - t
            drain()
        n = rounds * 10 * connections
        # Sends and the receivers' reads, as a real client population would.
        t = time.process_time()
        for _ in range(rounds):
            for _ in range(10):
                for s in senders:
                    s.send(payload)
            drain()
        with_drain = time.process_time() - t
        return {"connections": connections, "bytes": size, "sends": n,
                "cpu_us_per_send": round(send_only * 1e6 / n, 3),
                "cpu_us_per_send_and_read": round(with_drain * 1e6 / n, 3)}
    finally:
        for sock in (*senders, *receivers, listener):
            sock.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_send_floor",
                                description="CPU cost of one small TCP send on loopback")
    p.add_argument("--connections", type=int, default=500)
    p.add_argument("--bytes", type=int, default=280,
                   help="bytes per send (280: a ~100-byte action as a JSON WebSocket frame)")
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args(argv)
    if not 1 <= args.connections <= 10_000 or not 1 <= args.bytes <= 65536 \
            or not 1 <= args.rounds <= 1000:
        raise SystemExit("need 1..10000 connections, 1..65536 bytes, 1..1000 rounds")
    print(json.dumps(measure(args.connections, args.bytes, args.rounds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
