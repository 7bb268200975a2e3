"""The fan-out benchmark runs end to end and prints one sane JSON line.

It checks the output's fields, not speed: the figures depend on the machine.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from typing import Any

import pytest

from loadtest.nchan_peer import MISSING, find_nchan
from tests.support import REPO

LATENCY_KEYS = ("p50", "p90", "p99", "p99.9", "max")


def run_bench(*args: str, timeout: float) -> Any:
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_fanout", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout  # exactly one JSON line on stdout
    return json.loads(lines[0])


def check_result(r: dict[str, Any], server: str, viewers: int) -> None:
    assert r["server"] == server
    assert r["viewers"] == viewers
    assert r["viewers_joined"] == viewers
    assert r["offered_per_s"] > 0
    assert r["delivered_per_s"] > 0
    assert r["delivered_total"] > 0
    assert 0.0 <= r["loss"] <= 1.0
    lat = r["latency_ms"]
    assert lat["samples"] > 0
    values = [lat[k] for k in LATENCY_KEYS]
    assert all(isinstance(v, float) for v in values), lat
    assert 0.0 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert r["rss_per_connection"] > 0
    assert r["server_rss_mb"] > 0
    for key in ("server_cpu", "client_cpu"):
        assert isinstance(r[key], float) and r[key] >= 0.0
    assert isinstance(r["server_saturated"], bool)
    assert isinstance(r["client_saturated"], bool)
    assert r["connections_lost"] == 0


def test_liveroom_run_prints_one_json_line() -> None:
    r = run_bench("--viewers", "300", "--rate", "15000", "--duration", "1.5",
                  "--warmup", "0.3", "--drain", "1", timeout=60)
    check_result(r, "liveroom", 300)
    assert r["coalesce_window_s"] == 0.005
    assert r["messages_per_s"] > 0
    # The edge's send loop in C sends with send(2), which /proc/<pid>/io does
    # not count: no figure rather than a wrong one (loadtest.servers.writes_counted).
    if importlib.util.find_spec("edge._sendloop") is not None:
        assert r["server_writes_per_delivery"] is None


def test_peer_run_measures_both_and_the_ratio() -> None:
    r = run_bench("--viewers", "100", "--rate", "5000", "--duration", "1",
                  "--warmup", "0.2", "--drain", "1", "--peer", "python-socketio",
                  timeout=90)
    check_result(r["liveroom"], "liveroom", 100)
    check_result(r["python-socketio"], "python-socketio", 100)
    assert r["python-socketio"]["server_writes_per_delivery"] > 0
    assert r["ratio_delivered"] > 0
    assert r["ratio_server_cpu_per_delivery"] is None or r["ratio_server_cpu_per_delivery"] > 0


def test_state_mode_reports_latest_wins() -> None:
    r = run_bench("--viewers", "100", "--state-hz", "30", "--duration", "1",
                  "--warmup", "0.2", "--drain", "1", timeout=60)
    check_result(r, "liveroom", 100)
    st = r["state"]
    assert st["section"] == "stage" and st["hz"] == 30.0
    assert st["last_published"] > 0
    assert st["probes"] > 0
    # Latest-wins: no probe ever went back to an older value, all end on the last.
    assert st["regressions"] == 0
    assert st["probes_ending_on_last"] == st["probes"]


def test_compare_agent_rooms_runs_both_and_the_ratio() -> None:
    """--compare-agent-rooms: a liveroom agents process seats quinn in other
    rooms over the seats API and is triggered while the room is measured."""
    r = run_bench("--viewers", "100", "--rate", "5000", "--duration", "1",
                  "--warmup", "0.2", "--drain", "1", "--compare-agent-rooms", "10",
                  "--agent-trigger-rate", "10", timeout=120)
    check_result(r["without_agents"], "liveroom", 100)
    check_result(r["with_agents"], "liveroom", 100)
    seated = r["with_agents"]["seated"]
    assert seated["agent_rooms"] == 10 and seated["agent_rooms_answered"] == 10
    assert seated["triggers"] > 0 and seated["agent_replies_per_s"] > 0
    # The gateway's queue wait per priority (gifts and mentions) and the
    # agents process's own reply count, from its /metrics.
    waits = seated["queue_wait_s"]
    assert set(waits) <= {"gift", "mention"} and "mention" in waits, waits
    for w in waits.values():
        assert w["n"] > 0 and 0.0 <= w["p50"] <= w["p99"]
    assert seated["agents_replies_per_s"].get("ok", 0) > 0
    assert r["ratio_p99_latency"] > 0


@pytest.mark.skipif(find_nchan() is None,
                    reason="optional in make test: " + MISSING)
def test_nchan_peer_side_by_side() -> None:
    """--peer nchan: nginx + nchan on the same core, viewers over WebSocket,
    the publisher over pipelined HTTP POSTs; both sides counted alike."""
    r = run_bench("--viewers", "50", "--rate", "2500", "--duration", "1",
                  "--warmup", "0.2", "--drain", "1", "--peer", "nchan", timeout=90)
    check_result(r["liveroom"], "liveroom", 50)
    check_result(r["nchan"], "nchan", 50)
    assert r["nchan"]["loss"] == 0.0
    assert r["nchan"]["messages_per_frame"] == 1.0  # one text frame per message
    assert r["ratio_delivered"] > 0


def test_sendloop_bench_prints_both_loops() -> None:
    """loadtest.bench_sendloop: the C and the Python loop over real sockets."""
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_sendloop", "--members", "20", "--rounds", "3"],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["members"] == 20
    assert out["c"]["us_per_delivery"] > 0 and out["python"]["us_per_delivery"] > 0
