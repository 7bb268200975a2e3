"""A backend that receives liveroom's event webhooks, for the tests: checks
each request's signature (401 if wrong) and appends every event, one JSON
line each, to a file (flushed before the 200, so what the file holds was
acknowledged). Run as its own process, so a test can stop it and start it
again on the same port (a backend outage):

    python -m tests.event_receiver --port P --out events.jsonl   # LIVEROOM_WEBHOOK_SECRET
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from room_router.webhooks import SIGNATURE_HEADER, verify


def make_app(secret: str, out: Path) -> web.Application:
    async def events(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(secret, request.headers.get(SIGNATURE_HEADER, ""), body, time.time()):
            return web.Response(status=401, text="bad signature")
        batch: list[dict[str, Any]] = json.loads(body)["events"]
        with out.open("a") as f:
            for ev in batch:
                f.write(json.dumps(ev) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return web.Response(status=200)

    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_post("/events", events)
    return app


def read_events(out: Path) -> list[dict[str, Any]]:
    """Every event the receiver acknowledged, in arrival order (duplicates kept)."""
    if not out.exists():
        return []
    text = out.read_text()
    # The receiver may be writing a line as we read: only whole lines count
    # (a torn last line is read again next time).
    lines = text.split("\n")[:-1]
    return [json.loads(line) for line in lines if line.strip()]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    secret = os.environ["LIVEROOM_WEBHOOK_SECRET"]
    print(f"receiver listening on {args.port}", file=sys.stderr, flush=True)
    web.run_app(make_app(secret, args.out), host="127.0.0.1", port=args.port,
                print=None, access_log=None)


if __name__ == "__main__":
    main()
