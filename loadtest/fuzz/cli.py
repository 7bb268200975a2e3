"""Fuzz a live liveroom server while a canary room checks that it still delivers.

    python -m loadtest.fuzz --seconds 60 [--seed 7] [--url http://127.0.0.1:8080]

prints one JSON line on stdout (the summary) and exits 0 when nothing failed,
1 when something did (the summary's ``failures`` say what), 2 on bad usage.
How it works: loadtest/fuzz/__init__.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

from loadtest.fuzz.run import run
from loadtest.fuzz.target import Server


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

