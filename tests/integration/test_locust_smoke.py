"""Smoke test of the Locust load test (loadtest/locustfile.py): a few seconds
of headless Locust against a real ``liveroom serve``, read back from its CSV.

Locust is run as a subprocess, never imported here: importing it monkey-patches
the process with gevent, which would break pytest-asyncio in the other tests.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import JWT_SECRET, REPO, LiveServer

LOCUSTFILE = REPO / "loadtest" / "locustfile.py"


def _stats(prefix: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """(type, name) -> (requests, failures) from Locust's ``<prefix>_stats.csv``."""
    with open(f"{prefix}_stats.csv", newline="") as f:
        return {(row["Type"], row["Name"]): (int(row["Request Count"]),
                                             int(row["Failure Count"]))
                for row in csv.DictReader(f)}


@pytest.mark.parametrize("tokens", ["dev-token", "minted"])
def test_locust_smoke(tmp_path: Path, tokens: str) -> None:
    # Generous action limits: this checks the load test, not the rate limiter.
    with LiveServer(tmp_path / "data", "--action-rate", "100", "--action-burst", "100",
                    "--no-demo-room") as srv:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEROOM_")}
        env.update(LIVEROOM_ROOM="smoke", PYTHONUNBUFFERED="1")
        if tokens == "minted":
            env["LIVEROOM_JWT_SECRET"] = JWT_SECRET  # the server's (tests/support.py)
        prefix = tmp_path / "locust"
        proc = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
             "--only-summary", "-u", "10", "-r", "10", "-t", "5s", "--host", srv.url,
             "--csv", str(prefix)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out  # Locust exits 1 when any request failed
        stats = _stats(prefix)
        assert "Traceback" not in out, out
        assert "ERROR" not in srv.logs(), srv.logs()

    def count(rtype: str, pred: str) -> int:
        return sum(n for (t, name), (n, _) in stats.items()
                   if t == rtype and name.startswith(pred))

    assert count("WS", "deliver:comment") > 0, out   # viewers receive (batch frames too)
    assert count("WS", "send:comment") > 0, out      # viewers send
    assert count("WS", "join") >= 2, out             # the Host and the viewers joined
    assert count("WS", "state:roundtrip") > 0, out   # the Host's writes come back
    assert count("GET", "poll:head") > 0, out        # the Poller polls the head
    assert (count("POST", "dev-token") > 0) == (tokens == "dev-token"), out
    failures = stats[("", "Aggregated")][1]
    assert failures == 0, out
