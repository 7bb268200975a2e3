"""The cluster benchmark (loadtest/bench_cluster.py) runs end to end on a
real nats-server, redis-server, router and two edges, and prints sane JSON.

It checks the output's fields and that nothing was lost, not speed: the
figures depend on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO

SERVER_PROCS = {"edge-0", "edge-1", "nats-server", "redis-server", "router"}


def test_two_edges_one_room_no_loss() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_cluster", "--edges", "2", "--viewers", "100",
         "--rate", "5000", "--duration", "1", "--warmup", "0.3", "--drain", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout  # one JSON line per run
    r = json.loads(lines[0])
    assert r["edges"] == 2 and r["viewers"] == 100 and r["viewers_joined"] == 100
    # The router spread the viewers over both edges.
    assert sum(r["viewers_per_edge"]) == 100 and min(r["viewers_per_edge"]) > 0
    assert r["rate"] == 5000.0
    assert r["delivered_total"] == r["expected_total"] > 0
    assert r["loss"] == 0.0 and r["connections_lost"] == 0
    assert r["delivered_per_s"] > 0
    lat = r["latency_ms"]
    assert lat["samples"] > 0
    assert 0.0 <= lat["p50"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert set(r["cpu"]) == SERVER_PROCS
    assert all(v >= 0.0 for v in r["cpu"].values())
    assert r["cpu_us_per_delivery"] > 0
    assert 0.0 <= r["bus_share"] <= 1.0
    assert len(r["edge_saturated"]) == 2
    for key in ("server_saturated", "client_saturated", "shared_cores"):
        assert isinstance(r[key], bool)

