"""Poller benchmark: many polling clients read one room's state through a
real nginx cache while a host changes a section several times a second.

    python -m loadtest.bench_poll --pollers 2000 --duration 10 --writes-per-second 5

Starts a liveroom origin and nginx (cdn/nginx.conf) on free loopback ports,
runs the pollers (the logic of ``cdn.client.StatePoller`` on a lean raw
HTTP/1.1 client: head, then only the moved sections at their immutable URLs)
spread over ``--processes`` processes,
and prints one JSON line: pollers, requests served per second, origin
requests per second, the offload ratio, and how long after the last change
every poller held the final version (convergence).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from cdn import proxy
from loadtest.procstat import free_port

API_KEY = "bench-poll-api-key"
ROOM = "bench-poll"
SECTION = "stage"


def start_origin(data_dir: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """``liveroom serve`` on a free port; its log goes to a file we read the port from."""
    env = {**os.environ, "LIVEROOM_JWT_SECRET": "bench-poll-secret-0123456789abcdef",
           "LIVEROOM_API_KEY": API_KEY, "PYTHONUNBUFFERED": "1"}
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "origin.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "liveroom.cli", "serve", "--port", "0", "--no-demo-room",
             "--data-dir", str(data_dir), *extra], env=env, stderr=log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        m = re.search(r"listening on (http://[\d.]+:\d+)", log_path.read_text())
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            raise RuntimeError("origin exited: " + log_path.read_text())
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("origin did not start: " + log_path.read_text())


def wait_http(url: str, timeout: float = 10.0) -> None:
    import urllib.request
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that does one request at a time.
    A lean client (no per-request objects beyond bytes) so that thousands of
    pollers in one process keep their period and the benchmark measures the
    cache, not the client."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, dict[bytes, bytes], bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        lines = bytes(self.buf[:end]).split(b"\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(b":") for line in lines[1:])}
        length = int(headers.get(b"content-length", b"0"))
        if len(self.buf) < end + 4 + length:
            return
        body = bytes(self.buf[end + 4:end + 4 + length])
        del self.buf[:end + 4 + length]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result((int(lines[0].split()[1]), headers, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    async def get(self, path: str, etag: str | None) -> tuple[int, dict[bytes, bytes], bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        extra = f"If-None-Match: {etag}\r\n" if etag else ""
        self.transport.write(f"GET {path} HTTP/1.1\r\nHost: cdn\r\n"
                             f"Accept: application/json\r\n{extra}\r\n".encode())
        return await self.waiter


async def _poll_group(host: str, port: int, n: int, interval: float, stop_at: float,
                      grace_until: float, final: Any) -> dict[str, Any]:
    """``n`` pollers with the logic of ``cdn.client.StatePoller`` (head with
    If-None-Match, then only the moved sections at their immutable URLs,
    following redirects), each on its own keep-alive connection."""
    loop = asyncio.get_running_loop()
    reached: list[float | None] = [None] * n
    counts = {"requests": 0, "errors": 0}
    head_path = f"/v1/rooms/{ROOM}/state"

    async def one(i: int) -> None:
        await asyncio.sleep(random.uniform(0, interval))
        _, conn = await loop.create_connection(_Conn, host, port)
        etag: str | None = None
        versions: dict[str, int] = {}
        total = 0
        held_since = time.time()  # when ``total`` took its current value

        async def get(path: str, tag: str | None = None) -> tuple[int, dict[bytes, bytes],
                                                                  bytes]:
            for _ in range(3):  # follow a redirect or two
                counts["requests"] += 1
                status, headers, body = await conn.get(path, tag)
                if status != 302:
                    return status, headers, body
                path = headers[b"location"].decode()
            return status, headers, body

        while True:
            now = time.time()
            target = final.value  # known once the writer has stopped
            if target and total >= target:
                reached[i] = held_since  # the moment it first held the final version
                break
            if now > grace_until:
                break
            try:
                status, headers, body = await get(head_path, etag)
                if status == 200:
                    head = json.loads(body)
                    moved = [s for s, p in head["versions"].items() if versions.get(s) != p]
                    for s in moved:
                        st, _, sbody = await get(head["sections"][s])
                        if st == 200:
                            versions[s] = json.loads(sbody)["partial"]
                    if sum(versions.values()) != total:
                        total, held_since = sum(versions.values()), time.time()
                    etag = headers[b"etag"].decode() if total == head["total"] else None
                elif status != 304:
                    counts["errors"] += 1
            except (ConnectionError, KeyError, ValueError):
                counts["errors"] += 1
            await asyncio.sleep(interval)
        if conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(one(i) for i in range(n)))
    return {"reached": reached, **counts}


def _poll_process(host: str, port: int, n: int, interval: float, stop_at: float,
                  grace_until: float, final: Any, out: Any) -> None:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    out.put(asyncio.run(_poll_group(host, port, n, interval, stop_at, grace_until, final)))


async def _writer(origin: str, rate: float, until: float) -> tuple[int, float]:
    """Change the section ``rate`` times a second until ``until``; returns the
    final total and the time of the last change."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    total, last = 0, time.time()
    async with aiohttp.ClientSession() as http:
        n = 0
        next_at = time.time()
        while time.time() < until:
            n += 1
            async with http.post(f"{origin}/v1/rooms/{ROOM}/state/{SECTION}", headers=headers,
                                 json={"value": {"tick": n, "x": random.random()}}) as r:
                total = (await r.json())["total"]
                last = time.time()
            next_at += 1.0 / rate
            await asyncio.sleep(max(0.0, next_at - time.time()))
    return total, last


def origin_requests(origin: str) -> float:
    import urllib.request
    with urllib.request.urlopen(f"{origin}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if re.match(r"liveroom_cdn_requests_total\{", line))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def run(pollers: int, duration: float, writes_per_second: float, interval: float = 1.0,
        processes: int = 1, grace: float = 5.0, head_max_age: int = 1) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-poll-") as tmp:
        origin_proc, origin = start_origin(Path(tmp) / "data",
                                           ["--head-max-age", str(head_max_age)])
        cdn_port = free_port()
        nginx = proxy.start(listen=f"127.0.0.1:{cdn_port}", origin=origin,
                            prefix=Path(tmp) / "nginx")
        cdn = f"http://127.0.0.1:{cdn_port}"
        try:
            wait_http(f"{cdn}/healthz")
            # The room exists before the pollers start.
            asyncio.run(_writer(origin, 1000, time.time() + 0.001))
            before = origin_requests(origin)
            ctx = mp.get_context("spawn")
            final = ctx.Value("q", 0)
            out = ctx.Queue()
            start = time.time()
            stop_at = start + duration
            grace_until = stop_at + grace
            shares = [pollers // processes + (1 if i < pollers % processes else 0)
                      for i in range(processes)]
            procs = [ctx.Process(target=_poll_process,
                                 args=("127.0.0.1", cdn_port, k, interval, stop_at,
                                       grace_until, final, out))
                     for k in shares]
            for p in procs:
                p.start()
            total, last_change = asyncio.run(_writer(origin, writes_per_second, stop_at))
            final.value = total
            results = [out.get(timeout=duration + grace + 60) for _ in procs]
            for p in procs:
                p.join(10)
            elapsed = time.time() - start
            origin_count = origin_requests(origin) - before
        finally:
            nginx.terminate()
            nginx.wait(10)
            origin_proc.terminate()
            origin_proc.wait(10)
    reached = [r for res in results for r in res["reached"]]
    lags = [max(0.0, r - last_change) for r in reached if r is not None]
    served = sum(res["requests"] for res in results)
    return {
        "bench": "poll", "pollers": pollers, "processes": processes,
        "duration_s": round(elapsed, 2), "writes_per_second": writes_per_second,
        "final_total": total, "poll_interval_s": interval, "head_max_age_s": head_max_age,
        "requests": served, "requests_per_s": round(served / elapsed, 1),
        "origin_requests": int(origin_count),
        "origin_requests_per_s": round(origin_count / elapsed, 2),
        "offload_ratio": round(served / max(1.0, origin_count), 1),
        "converged": len(lags), "not_converged": pollers - len(lags),
        "convergence_s": {"p50": round(pct(lags, 0.5), 3), "p99": round(pct(lags, 0.99), 3),
                          "max": round(max(lags), 3) if lags else None},
        "errors": sum(res["errors"] for res in results),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pollers", type=int, default=2000)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--writes-per-second", type=float, default=5.0)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    ap.add_argument("--processes", type=int, default=1, help="poller processes")
    ap.add_argument("--grace", type=float, default=5.0,
                    help="seconds after the last change to wait for convergence")
    ap.add_argument("--head-max-age", type=int, default=1)
    a = ap.parse_args()
    print(json.dumps(run(a.pollers, a.duration, a.writes_per_second, a.interval, a.processes,
                         a.grace, a.head_max_age)))


if __name__ == "__main__":
    main()
