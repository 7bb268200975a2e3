"""The in-process hub benchmark runs (about a second) and prints one sane
JSON line. It checks the output's fields and what the hub must do in each
scenario, not speed: the figures depend on the machine."""

from __future__ import annotations

import json

import pytest

from loadtest.bench_hub import main

ROOMS, MEMBERS, PER_TICK = 3, 200, 4


def test_every_scenario_reports_sane_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--rooms", str(ROOMS), "--members", str(MEMBERS), "--per-tick",
                 str(PER_TICK), "--duration", "0.1"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert (out["rooms"], out["members"], out["per_tick"]) == (ROOMS, MEMBERS, PER_TICK)
    got = {(s["codec"], s["coalesce"], s["shedding"]): s for s in out["scenarios"]}
    assert set(got) == {(c, co, sh) for c in ("json", "msgpack") for co in (True, False)
                        for sh in (True, False)}
    for (_, coalesce, shedding), s in got.items():
        assert s["ticks"] >= 1 and s["messages"] == s["ticks"] * ROOMS * PER_TICK
        assert s["closed"] == 0  # slow readers are degraded, never closed
        assert s["deliveries"] == s["messages"] * MEMBERS - s["shed"]
        assert s["us_per_delivery"] > 0 and s["deliveries_per_s"] > 0
        assert s["bytes_written"] > 0 and s["frames_built"] > 0
        if shedding:
            # Likes shed by half the members, comments by a quarter.
            assert s["shed"] > 0
        else:
            assert s["shed"] == 0
        if coalesce:
            # One frame per room per tick (per shedding level: all, no
            # likes, gifts only), one write per member per tick.
            assert s["frames_built_per_tick"] == ROOMS * (3 if shedding else 1)
            assert s["writes"] == s["ticks"] * ROOMS * MEMBERS
        else:
            # One frame per message, one write per delivery.
            assert s["frames_built_per_tick"] == ROOMS * PER_TICK
            assert s["writes"] == s["deliveries"]


def test_bad_flags_are_refused() -> None:
    with pytest.raises(SystemExit):
        main(["--codecs", "xml"])
