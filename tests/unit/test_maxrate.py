"""The ``--find-max`` search of the fan-out benchmark, with a fake trial."""

from __future__ import annotations

from typing import Any

from loadtest.maxrate import find_max


def fake_result(rate: float, limit: float) -> dict[str, Any]:
    ok = rate <= limit
    return {"offered_per_s": rate, "delivered_per_s": rate if ok else limit,
            "loss": 0.0 if ok else 0.5, "connections_lost": 0,
            "latency_ms": {"p99": 10.0 if ok else 5000.0}, "server_us_per_delivery": 1.0,
            "messages_per_frame": 1.0, "server_saturated": not ok, "client_saturated": False}


def test_it_climbs_by_1_4_then_steps_back_once() -> None:
    asked: list[float] = []

    def trial_at(rate: float) -> dict[str, Any]:
        asked.append(rate)
        return fake_result(rate, 2500.0)

    found = find_max(trial_at, 1000.0, 100.0)
    assert [round(r) for r in asked] == [1000, 1400, 1960, 2744, 2254]
    assert round(found["max_kept_up_per_s"]) == 2254
    assert found["at_offered_per_s"] == 2254.0
    assert [t["kept_up"] for t in found["trials"]] == [True, True, True, False, True]
    assert found["best"]["offered_per_s"] == asked[-1]


def test_nothing_kept_up_gives_zero() -> None:
    found = find_max(lambda rate: fake_result(rate, 10.0), 1000.0, 100.0)
    assert found["max_kept_up_per_s"] == 0.0 and found["best"] is None
    assert len(found["trials"]) == 1
