"""The max-rate search of the fan-out benchmark (``--find-max``): the
highest offered rate a server keeps up with, found by trials.

Pure apart from the trial it is given (a callable that runs the benchmark
at one offered rate, on a fresh server, and returns its result), so the
search itself reads and tests without a server.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

# The search: up by UP per trial, at most MAX_TRIALS of them, then one trial
# STEP_BACK above the last good one.
UP = 1.4
STEP_BACK = 1.15
MAX_TRIALS = 12


def kept_up(r: dict[str, Any], max_p99: float) -> bool:
    p99 = r["latency_ms"]["p99"]
    return (r["loss"] <= 0.001 and r["connections_lost"] == 0
            and isinstance(p99, float) and math.isfinite(p99) and p99 <= max_p99)


def find_max(trial_at: Callable[[float], dict[str, Any]], first_rate: float,
             max_p99: float) -> dict[str, Any]:
    """The highest offered rate kept up with: up by x1.4 from ``first_rate``
    until a trial fails, then one trial x1.15 above the last good one."""
    trials: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None

    def trial(rate: float) -> bool:
        nonlocal best
        r = trial_at(rate)
        ok = kept_up(r, max_p99)
        trials.append({"offered_per_s": r["offered_per_s"], "delivered_per_s":
                       r["delivered_per_s"], "loss": r["loss"], "p99_ms": r["latency_ms"]["p99"],
                       "server_us_per_delivery": r["server_us_per_delivery"],
                       "messages_per_frame": r["messages_per_frame"],
                       "server_saturated": r["server_saturated"],
                       "client_saturated": r["client_saturated"], "kept_up": ok})
        if ok:
            best = r
        return ok

    rate = first_rate
    good = 0.0
    for _ in range(MAX_TRIALS):
        if not trial(rate):
            break
        good = rate
        rate *= UP
    if good and trial(good * STEP_BACK):
        good *= STEP_BACK
    return {"max_p99_ms": max_p99,
            "max_kept_up_per_s": best["delivered_per_s"] if best else 0.0,
            "at_offered_per_s": round(good * 1.0, 1), "best": best, "trials": trials}
