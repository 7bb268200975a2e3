"""The pure parts of the side-by-side runner (loadtest/side_by_side.py) and
of the nchan peer's config (loadtest/nchan_peer.py): no server started."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from loadtest import nchan_peer, side_by_side


def run(server: str, us: float, p99: float, **extra: Any) -> dict[str, Any]:
    return {"server": server, "server_us_per_delivery": us, "latency_ms": {"p99": p99},
            "delivered_per_s": 1000.0, "loss": 0.0, "client_saturated": False,
            "server_core_other": 0.0, **extra}


def test_cells_default_to_the_issues_table() -> None:
    assert side_by_side.parse_cells("") == list(side_by_side.TABLE)
    assert set(side_by_side.TABLE) == set(side_by_side.REFERENCE)
    assert side_by_side.parse_cells("1000x50000, 5000x4e5") == [(1000, 50_000), (5000, 400_000)]


@pytest.mark.parametrize("bad", ["1000", "x5", "ax1", ",".join(["1x1"] * 51)])
def test_bad_cells_are_refused(bad: str) -> None:
    with pytest.raises(SystemExit):
        side_by_side.parse_cells(bad)


def test_summary_gives_medians_beside_the_issues_figures() -> None:
    runs = {(1000, 50_000, "liveroom"): [run("liveroom", 4.0, 10.0), run("liveroom", 6.0, 30.0),
                                          run("liveroom", 5.0, 20.0)],
            (1000, 50_000, "nchan"): [run("nchan", 3.0, 8.0), {"server": "nchan", "error": "x"}]}
    table = side_by_side.summary("nchan", [(1000, 50_000)], runs)
    row = table.splitlines()[2]
    assert "| 1,000 | 50k* |" in row  # a failed run marks the cell
    assert "5.00 / 3.00" in row and "20.0 / 8.0" in row and "4/5" in row
    assert "3.6 / 2.61" in row and "5.1 / 4.2" in row


def test_each_run_is_its_own_locked_process() -> None:
    args = argparse.Namespace(duration=3.0, warmup=1.0, lock="/tmp/x.lock",
                              extra=["--codec", "msgpack"])
    cmd = side_by_side.run_cmd(args, "nchan", 5000, 400_000)
    assert cmd[:2] == ["flock", "/tmp/x.lock"]
    assert cmd[cmd.index("--server") + 1] == "nchan"
    assert cmd[-2:] == ["--codec", "msgpack"]


def test_nchan_config_has_one_worker_and_both_locations() -> None:
    conf = nchan_peer.nginx_config("/tmp/p", "/m.so", 4321, 2048, nchan_peer.buffer_length(400))
    assert "worker_processes 1;" in conf and "listen 127.0.0.1:4321" in conf
    assert "nchan_subscriber websocket;" in conf and "nchan_publisher http;" in conf
    assert "nchan_message_buffer_length 4000;" in conf  # 10 s of 400 messages/s
    assert nchan_peer.buffer_length(0.1) == 16
    assert nchan_peer.buffer_length(1e9) == nchan_peer.MAX_BUFFER
