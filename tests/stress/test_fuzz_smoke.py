"""``python -m loadtest.fuzz`` for 20 seconds against its own server: random
and mutated frames over both codecs and both transports, and the HTTP API,
while its canary room checks delivery. It must exit 0 (no crash, stall,
cross-room effect, internal error, leak or log flood) and print its JSON
summary, which this test passes on as its figures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.stress.conftest import Figures
from tests.support import REPO

pytestmark = [pytest.mark.stress, pytest.mark.timeout(120)]

SECONDS = 20


def test_fuzz_smoke_run_is_clean(figures: Figures) -> None:
    run = subprocess.run([sys.executable, "-m", "loadtest.fuzz", "--seconds", str(SECONDS),
                          "--seed", "12"], cwd=REPO, capture_output=True, text=True,
                         timeout=100)
    lines = run.stdout.strip().splitlines()
    assert lines, f"no summary (exit {run.returncode}):\n{run.stderr[-3000:]}"
    summary = json.loads(lines[-1])
    figures(**{k: summary[k] for k in ("ok", "failures", "frames_sent", "errors_by_code",
                                       "closes_by_code", "canary", "server")})
    assert run.returncode == 0 and summary["ok"], summary["failures"]
    assert sum(summary["frames_sent"].values()) > 1000
    assert summary["canary"]["sent"] >= SECONDS * 5
