"""The model gateway benchmark: queue wait p50/p99 per priority and replies/s
of one agents process with characters in 100 rooms (``liveroom.gateway_bench``
has the scenario and its flags; docs/BENCHMARKS.md, *Model gateway*).

    python -m loadtest.bench_gateway --rooms 100 --rate 12 --latency 0.5 \\
        --concurrency 4 --duration 30

It runs ``python -m liveroom.gateway_bench`` as that one agents process (the
scenario composes the agents' parts, a composition root's job) and passes
its JSON line through.
"""

from __future__ import annotations

import subprocess
import sys


def main() -> None:
    proc = subprocess.run([sys.executable, "-m", "liveroom.gateway_bench", *sys.argv[1:]],
                          check=False)
    raise SystemExit(proc.returncode)


if __name__ == "__main__":
    main()
