"""The side-by-side table in one command: liveroom and a peer (nchan by
default) at each cell of issue 18's table, alternating.

    python -m loadtest.side_by_side                      # the whole table, 3 repeats
    python -m loadtest.side_by_side --repeats 1 --duration 3
    python -m loadtest.side_by_side --cells 1000x50000,5000x400000 --peer python-socketio

Each run is one ``python -m loadtest.bench_fanout --server <side> --viewers V
--rate R ...`` in its own process under ``flock --lock`` (default
/tmp/bench.lock: no two benchmarks of the machine overlap; ``--lock ''``
runs without), so each side gets a fresh server and the same pinning (server
core 0, clients core 1 unless flags after ``--`` say otherwise). Within a
cell the order alternates per repeat (liveroom first, then the peer first),
so a drift of the machine does not favour one side.

stdout: one JSON line per run (bench_fanout's line, plus ``cell``,
``repeat`` and ``loadavg``, the 1-minute load average before the run), then
a markdown table of the medians per cell next to the issue's figures. A run
that fails prints ``{"error": ...}`` and the table uses the others. A cell
marked ``*`` had a run with a saturated client or with other processes on
the server's core (``server_core_other`` > 0.1): read its figures with care.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from typing import Any

from loadtest.fanout_args import PEERS
from loadtest.wsclient import LIVEROOM, NCHAN

# (viewers, offered deliveries/s) of the table.
TABLE = ((1000, 50_000), (1000, 200_000), (1000, 400_000), (5000, 50_000), (5000, 100_000),
         (5000, 200_000), (5000, 400_000), (10000, 100_000), (10000, 200_000))
# The figures: CPU µs per delivery and p99 ms, (liveroom, nchan).
REFERENCE: dict[tuple[int, int], tuple[tuple[float, float], tuple[float, float]]] = {
    (1000, 50_000): ((3.60, 2.61), (5.1, 4.2)),
    (1000, 200_000): ((2.14, 2.36), (14.1, 5.6)),
    (1000, 400_000): ((1.13, 1.05), (18.8, 16.9)),
    (5000, 50_000): ((4.45, 4.76), (35.5, 30.7)),
    (5000, 100_000): ((3.42, 2.97), (28.4, 25.1)),
    (5000, 200_000): ((3.17, 2.46), (35.3, 22.4)),
    (5000, 400_000): ((1.99, 1.15), (78.0, 149.0)),
    (10000, 100_000): ((4.37, 4.78), (71.0, 64.0)),
    (10000, 200_000): ((3.95, 3.62), (167.0, 163.0)),
}
MAX_REPEATS = 20
MAX_CELLS = 50
# A run's bound: setup (10,000 connections), warm-up, measure, drain, stop.
RUN_TIMEOUT_S = 300.0


def parse_cells(text: str) -> list[tuple[int, int]]:
    """'1000x50000,5000x400000' -> cells; empty -> the whole table."""
    if not text:
        return list(TABLE)
    cells = []
    for part in text.split(","):
        viewers, _, rate = part.strip().partition("x")
        try:
            cells.append((int(viewers), int(float(rate))))
        except ValueError:
            raise SystemExit(f"--cells: {part!r} is not VIEWERSxRATE") from None
    if len(cells) > MAX_CELLS:
        raise SystemExit(f"--cells: at most {MAX_CELLS}")
    return cells


def run_cmd(args: argparse.Namespace, server: str, viewers: int, rate: int) -> list[str]:
    cmd = [sys.executable, "-m", "loadtest.bench_fanout", "--server", server,
           "--viewers", str(viewers), "--rate", str(rate), "--duration", str(args.duration),
           "--warmup", str(args.warmup), *args.extra]
    return (["flock", args.lock] if args.lock else []) + cmd


def run(args: argparse.Namespace, server: str, viewers: int, rate: int,
        repeat: int) -> dict[str, Any]:
    head = {"cell": f"{viewers}x{rate}", "repeat": repeat, "loadavg": os.getloadavg()[0]}
    try:
        proc = subprocess.run(run_cmd(args, server, viewers, rate), capture_output=True,
                              text=True, timeout=RUN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {**head, "server": server, "error": f"timed out after {RUN_TIMEOUT_S:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        return {**head, "server": server,
                "error": f"exit {proc.returncode}: {proc.stderr.strip()[-1000:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return {**head, **result}


def median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [_get(r, key) for r in runs if "error" not in r]
    present = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(present) if present else None


def _get(r: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        r = r.get(part) if isinstance(r, dict) else None  # type: ignore[assignment]
    return r


def _fmt(v: float | None, digits: int) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def _doubtful(runs: list[dict[str, Any]]) -> bool:
    return any("error" in r or r.get("client_saturated")
               or (r.get("server_core_other") or 0.0) > 0.1 for r in runs)


def summary(peer: str, cells: list[tuple[int, int]],
            runs: dict[tuple[int, int, str], list[dict[str, Any]]]) -> str:
    """The medians per cell as a markdown table, the issue's figures beside."""
    ref = peer == NCHAN
    head = (f"| viewers | offered/s | CPU µs/delivery liveroom / {peer} | p99 ms liveroom / {peer}"
            f" | delivered/s liveroom / {peer} | loss liveroom / {peer} | runs"
            + (" | issue: µs | issue: p99 ms |" if ref else " |"))
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for viewers, rate in cells:
        ours, theirs = runs[(viewers, rate, LIVEROOM)], runs[(viewers, rate, peer)]

        def pair(key: str, digits: int, a: list[dict[str, Any]] = ours,
                 b: list[dict[str, Any]] = theirs) -> str:
            return f"{_fmt(median(a, key), digits)} / {_fmt(median(b, key), digits)}"

        ok = sum(1 for r in ours + theirs if "error" not in r)
        row = (f"| {viewers:,} | {rate // 1000}k{'*' if _doubtful(ours + theirs) else ''}"
               f" | {pair('server_us_per_delivery', 2)} | {pair('latency_ms.p99', 1)}"
               f" | {pair('delivered_per_s', 0)} | {pair('loss', 4)} | {ok}/{len(ours + theirs)}")
        if ref:
            (cpu_l, cpu_n), (p99_l, p99_n) = REFERENCE.get((viewers, rate), ((0, 0), (0, 0)))
            row += f" | {cpu_l} / {cpu_n} | {p99_l} / {p99_n}"
        lines.append(row + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="python -m loadtest.side_by_side", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer", choices=PEERS, default=NCHAN)
    p.add_argument("--repeats", type=int, default=3, help=f"runs per side and cell "
                                                          f"(1..{MAX_REPEATS})")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--cells", default="", help=f"VIEWERSxRATE,... (at most {MAX_CELLS}; "
                                               "default: the issue's table)")
    p.add_argument("--lock", default="/tmp/bench.lock",
                   help="flock this file around each run ('' for none)")
    args = p.parse_args(argv)
    args.extra = extra  # more bench_fanout flags, after --
    if not 1 <= args.repeats <= MAX_REPEATS:
        raise SystemExit(f"--repeats must be 1..{MAX_REPEATS}")
    if args.lock and shutil.which("flock") is None:
        raise SystemExit("flock (util-linux) is not installed: give --lock ''")
    if args.peer == NCHAN:
        from loadtest.nchan_peer import MISSING, find_nchan
        if find_nchan() is None:
            raise SystemExit(MISSING)
    cells = parse_cells(args.cells)
    runs: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    for viewers, rate in cells:
        for repeat in range(args.repeats):
            order = (LIVEROOM, args.peer) if repeat % 2 == 0 else (args.peer, LIVEROOM)
            for server in order:
                r = run(args, server, viewers, rate, repeat)
                runs.setdefault((viewers, rate, server), []).append(r)
                print(json.dumps(r), flush=True)
    print(f"\nMedians of {args.repeats} run(s) per side, {args.duration:g} s measured "
          f"(python -m loadtest.side_by_side {' '.join(sys.argv[1:])}); "
          f"load average now {os.getloadavg()[0]:.2f}:\n", flush=True)
    print(summary(args.peer, cells, runs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
