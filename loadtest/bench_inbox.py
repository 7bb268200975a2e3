"""The cost of a durable peer inbox: appends per second and append latency
(p50/p99) of the SQLite inbox with ``synchronous=FULL`` (the default: an
acknowledged message survives an OS crash or a power loss) against
``NORMAL`` (survives a crash of the process only), in a temporary directory.
Prints one JSON object. I/O-bound: run it on the disk you deploy on.

    python -m loadtest.bench_inbox [--appends 3000] [--dir /path/on/that/disk]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from room_router.inbox import InboxCap, SqliteInbox


async def _run(directory: Path, synchronous: str, appends: int) -> dict[str, Any]:
    inbox = SqliteInbox(directory / f"inbox-{synchronous}.sqlite3", synchronous=synchronous)
    await inbox.open()
    cap = InboxCap(messages=10**9, bytes=10**12)
    body = {"text": "x" * 100}
    lat: list[float] = []
    try:
        t0 = time.perf_counter()
        for i in range(appends):
            a = time.perf_counter()
            # 50 recipients, as a busy edge would see them
            await inbox.append(f"u{i % 50}", "sender", "Sender", f"m-{i}", body, time.time(), cap)
            lat.append(time.perf_counter() - a)
        elapsed = time.perf_counter() - t0
    finally:
        await inbox.close()
    q = statistics.quantiles(lat, n=100)
    return {"appends": appends, "appends_per_s": round(appends / elapsed, 1),
            "p50_ms": round(q[49] * 1e3, 3), "p99_ms": round(q[98] * 1e3, 3)}


async def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--appends", type=int, default=3000)
    p.add_argument("--dir", type=Path, default=None,
                   help="where the files go (default: a temporary directory)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        result = {mode: await _run(Path(tmp), mode, args.appends) for mode in ("FULL", "NORMAL")}
    result["full_over_normal_p50"] = round(result["FULL"]["p50_ms"] /
                                           max(result["NORMAL"]["p50_ms"], 1e-9), 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1:])))
