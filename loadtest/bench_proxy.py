"""Publish-proxy latency: what the backend hook adds to a proxied action.

    python -m loadtest.bench_proxy --rate 100 --duration 10

Starts the worked backend (``python -m examples.backend``, no faults, a
balance no gift exhausts) and a ``liveroom serve`` whose rooms config proxies
``gift`` to it, on free loopback ports. Two members of the room: one
sends ``--rate`` proxied ``gift`` actions a second for ``--duration``
seconds, the other as many of an unproxied custom kind (``bench.ping``)
with the same body, each with its own ``id``, and times
each one from its send to its own copy coming back (``client_id``).
Prints one JSON line: p50/p90/p99 of both, and the difference (what the
proxy adds: one HTTP round trip to the backend and its decision).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from edge.auth import mint_token
from edge.client import LiveroomClient

SECRET = "bench-proxy-secret-0123456789abcdef"
API_KEY = "bench-proxy-api-key"
ROOM = "bench-proxy"


def start(cmd: list[str], log_path: Path, pattern: str) -> tuple[subprocess.Popen[bytes], str]:
    """``cmd`` with its log in ``log_path``; the first group of ``pattern``
    (its URL) once it logs it."""
    env = {**os.environ, "LIVEROOM_JWT_SECRET": SECRET, "LIVEROOM_API_KEY": API_KEY,
           "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stderr=log, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        m = re.search(pattern, log_path.read_text())
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{cmd[2]} did not start:\n{log_path.read_text()}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def measure(ws_url: str, rate: float, duration: float) -> dict[str, list[float]]:
    """Two members send, one the proxied kind, one the unproxied (a proxied
    action holds its connection's next frames until the backend answers, so
    one connection for both would time the unproxied ones behind it)."""
    async with aiohttp.ClientSession() as http:
        took = await asyncio.gather(*(send(http, ws_url, kind, rate, duration)
                                      for kind in ("gift", "bench.ping")))
    return {"gift": took[0], "bench.ping": took[1]}


async def send(http: aiohttp.ClientSession, ws_url: str, kind: str, rate: float,
               duration: float) -> list[float]:
    token = mint_token(SECRET, f"bench-{kind}", "bench", "viewer", time.time(), 3600)
    sent: dict[str, float] = {}
    took: list[float] = []
    client = await LiveroomClient.connect(ws_url, token, session=http)
    assert (await client.join(ROOM))["type"] == "joined"

    async def receive() -> None:
        while True:
            frame = await client.recv(30)
            cid = frame.get("client_id")
            if frame.get("type") == "action" and cid in sent:
                took.append(time.perf_counter() - sent.pop(cid))
            elif frame.get("type") == "error":
                raise RuntimeError(f"refused: {frame}")

    reader = asyncio.create_task(receive())
    loop = asyncio.get_running_loop()
    start_at = loop.time()
    for i in range(int(rate * duration)):
        await asyncio.sleep(max(0.0, start_at + i / rate - loop.time()))
        cid = f"a{i}"
        sent[cid] = time.perf_counter()
        await client.send({"type": "action", "room": ROOM, "kind": kind, "id": cid,
                           "body": {"gift": "rose", "count": 1}})
    deadline = loop.time() + 5
    while sent and loop.time() < deadline and not reader.done():
        await asyncio.sleep(0.01)
    if reader.done():
        reader.result()  # raises what stopped it
    reader.cancel()
    await client.close()
    return took


async def hook_seconds(url: str, backend_url: str) -> dict[str, Any]:
    """The calls the backend counted, and the edge's mean hook call time
    (``liveroom_hook_seconds``): proof that the gifts went through it."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{backend_url}/calls") as r:
            calls = await r.json()
        async with http.get(f"{url}/metrics") as r:
            text = await r.text()
    samples = dict(re.findall(r'^liveroom_hook_seconds_(sum|count)\{hook="publish"\} (\S+)$',
                              text, re.M))
    count = float(samples.get("count", 0))
    mean = float(samples.get("sum", 0)) / count if count else 0.0
    return {"backend_calls": calls.get("publish", 0), "mean_call_ms": round(mean * 1000, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_proxy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=100.0,
                   help="proxied actions per second (as many unproxied ones besides)")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--coalesce-window", default="0.005",
                   help="the server's (its default); 0 shows the hook's full round trip")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "rooms.toml").write_text('[default]\npublish_proxy = ["gift"]\n')
        backend, backend_url = start(
            [sys.executable, "-m", "examples.backend", "--port", "0",
             "--initial-balance", "1000000000"],
            d / "backend.log", r"backend listening on (http://[\d.]+:\d+)")
        server = None
        try:
            server, url = start(
                [sys.executable, "-m", "liveroom.cli", "serve", "--port", "0", "--no-agents",
                 "--no-demo-room", "--quic-port", "off", "--data-dir", str(d / "data"),
                 "--rooms-config", str(d / "rooms.toml"), "--backend-url", backend_url,
                 "--action-rate", "1000", "--action-burst", "1000",
                 "--frame-rate", "1000", "--frame-burst", "1000",
                 "--coalesce-window", args.coalesce_window],
                d / "server.log", r"listening on (http://[\d.]+:\d+)")
            took = asyncio.run(measure(url.replace("http://", "ws://") + "/ws", args.rate,
                                       args.duration))
            hook = asyncio.run(hook_seconds(url, backend_url))
        finally:
            for proc in (server, backend):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)
    out: dict[str, Any] = {"proxied_per_second": args.rate, "duration": args.duration,
                           "coalesce_window": float(args.coalesce_window)}
    for kind, label in (("gift", "proxied"), ("bench.ping", "unproxied")):
        values = took[kind]
        out[label] = {"n": len(values),
                      **{f"p{q}_ms": round(percentile(values, q) * 1000, 3)
                         for q in (50, 90, 99)}}
    out["hook"] = hook
    out["added_ms"] = {k: round(out["proxied"][k] - out["unproxied"][k], 3)
                       for k in ("p50_ms", "p90_ms", "p99_ms")}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
