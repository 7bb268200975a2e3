"""loadtest.seated_agents' reading of the gateway's queue-wait histogram."""

from __future__ import annotations

import math

from loadtest.seated_agents import _gateway_figures, bucket_quantile

INF = math.inf


def test_quantile_interpolates_inside_its_bucket() -> None:
    # 10 waits under 1 ms, 10 more between 1 and 5 ms.
    buckets = [(0.001, 10.0), (0.005, 20.0), (INF, 20.0)]
    assert bucket_quantile(buckets, 0.5) == 0.001
    assert bucket_quantile(buckets, 0.25) == 0.0005
    assert bucket_quantile(buckets, 0.75) == 0.003


def test_quantile_in_the_inf_bucket_is_the_largest_bound() -> None:
    assert bucket_quantile([(0.001, 1.0), (30.0, 1.0), (INF, 100.0)], 0.99) == 30.0


def test_figures_are_the_difference_of_two_scrapes() -> None:
    before = {"waits": {"mention": {0.001: 5.0, INF: 5.0}}, "replies": {"ok": 5.0}}
    after = {"waits": {"mention": {0.001: 15.0, INF: 15.0}, "gift": {0.001: 0.0, INF: 0.0}},
             "replies": {"ok": 25.0, "error": 0.0}}
    out = _gateway_figures(before, after, 2.0)
    assert out["queue_wait_s"] == {"mention": {"n": 10, "p50": 0.0005, "p99": 0.00099}}
    assert out["agents_replies_per_s"] == {"error": 0.0, "ok": 10.0}
