"""The benchmarks' figures from their raw readings (pure): percentiles,
counters read off cumulative timelines, ratios, and strict JSON."""

from __future__ import annotations

import bisect
import math
from typing import Any


def interpolate(timeline: list[list[float]], t: float, col: int) -> float:
    """Column ``col`` of a cumulative timeline, at wall time ``t``."""
    if not timeline:
        return 0.0
    i = bisect.bisect_left([x[0] for x in timeline], t)
    if i == 0:
        return float(timeline[0][col]) if t >= timeline[0][0] else 0.0
    if i >= len(timeline):
        return float(timeline[-1][col])
    a, b = timeline[i - 1], timeline[i]
    return a[col] + (b[col] - a[col]) * ((t - a[0]) / (b[0] - a[0]) if b[0] > a[0] else 1.0)


def gained_between(outs: list[dict[str, Any]], t0: float, t1: float, col: int) -> float:
    """Sum over the viewer processes of column ``col`` gained between t0 and t1."""
    return sum(interpolate(o["timeline"], t1, col) - interpolate(o["timeline"], t0, col)
               for o in outs)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 2)


def finite(obj: Any) -> Any:
    """NaN (no latency sample) becomes null: the line must stay strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def delivery_figures(bench_published: int, joined: int, duration: float,
                     delivered_per_s: float, delivered_total: int, expected: int,
                     drain_s: float, samples: list[float]) -> dict[str, Any]:
    """The figures every fan-out run reports the same way: rates, loss after
    the drain, and the probes' latency percentiles (``samples`` sorted, ms)."""
    return {
        "messages_per_s": round(bench_published / duration, 1),
        "offered_per_s": round(bench_published * joined / duration, 1),
        "delivered_per_s": round(delivered_per_s, 1),
        "delivered_total": delivered_total,
        "expected_total": expected,
        "loss": round(min(1.0, max(0.0, 1.0 - delivered_total / expected)), 6)
        if expected else 0.0,
        "drain_s": round(drain_s, 3),
        "latency_ms": {
            "p50": round(percentile(samples, 0.50), 3),
            "p90": round(percentile(samples, 0.90), 3),
            "p99": round(percentile(samples, 0.99), 3),
            "p99.9": round(percentile(samples, 0.999), 3),
            "max": round(samples[-1], 3) if samples else float("nan"),
            "samples": len(samples),
        },
    }
