"""One fuzz run: the canary in its process, the attackers all at once for
``--seconds``, the server watched every second (``/healthz``, its process),
then, once the fuzzers have left, the leak and log checks, and the JSON
summary (the report) that ``python -m loadtest.fuzz`` prints."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import secrets
import time
from typing import Any

import aiohttp

from edge.auth import mint_token
from loadtest.fuzz.attack import Fuzz, Stats
from loadtest.fuzz.canary import CanarySpec, canary_process
from loadtest.fuzz.http_attacker import http_worker, unseat
from loadtest.fuzz.target import Server, alive, leaks, metric
from loadtest.fuzz.ws_attacker import ws_worker
from loadtest.fuzz.wt_attacker import wt_worker
from loadtest.procstat import Usage, cpu_seconds


async def canary_token(fz: Fuzz, user: str, rooms: dict[str, str] | None) -> str:
    """The canary's token: host of its own room only (the fuzzers' grants
    never name it, see loadtest/fuzz/tokens.py)."""
    if fz.server.secret:
        return mint_token(fz.server.secret, user, user, "viewer", time.time(), 86400, rooms)
    return await fz.dev_token(user, "viewer", rooms)


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
        fz.canary_room, fz.canary_users = room, ("canary-sender", "canary-receiver")
        spec = CanarySpec(server.ws_url, server.wt_url, server.cert_sha256,
                          await canary_token(fz, "canary-sender", {room: "host"}),
                          await canary_token(fz, "canary-receiver", None), room,
                          args.canary_interval, args.canary_deadline)
        ctx = multiprocessing.get_context("spawn")
        pipe, child_pipe = ctx.Pipe()
        canary = ctx.Process(target=canary_process, args=(spec, child_pipe), daemon=True)
        canary.start()
        if not pipe.poll(30):
            raise RuntimeError("the canary did not start")
        first = pipe.recv()
        if first != "ready":
            canary.join(5)
            return {**summary, "ok": False, "failures": first.get("failures", [str(first)])}
        base_connections = await metric(http, server.url, "liveroom_connections")

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
            down = await alive(server, http)
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

        # The fuzzers are gone (and the seats they took, each a connection,
        # with them): the server's connections come back to the canary's;
        # then what it holds is compared with the warm-up.
        connections_end = None
        if not down:
            await unseat(fz, http)
            deadline = loop.time() + 15
            while loop.time() < deadline:
                connections_end = await metric(http, server.url, "liveroom_connections")
                if connections_end == base_connections:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            down = await alive(server, http)
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
            for leak in leaks(warm, end, args.rss_bound_mb, args.fd_bound):
                stats.fail(leak)
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
        "replies_by_type": dict(stats.replies.most_common()),
        "token_profiles": dict(sorted(stats.tokens.items())),
        "closes_by_code": dict(sorted(stats.closes.items())),
        "http_by_status": dict(sorted(stats.http.items())),
        "api_by_route": dict(sorted(stats.api.items())),
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
