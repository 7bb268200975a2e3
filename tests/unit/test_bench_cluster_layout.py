"""Where the cluster benchmark runs its processes (loadtest/bench_cluster.py,
``layout``: pure): one edge per server CPU, the clients on the rest, and a
flag when nothing is left for them."""

from __future__ import annotations

from loadtest.bench_cluster import layout


def test_layout_pins_one_edge_per_core_and_gives_clients_the_rest() -> None:
    sixteen = set(range(16))
    lay = layout(14, sixteen)
    assert lay.edge_cpus == [{i} for i in range(14)]
    assert lay.client_cpus == {14, 15} and lay.infra_cpus == set(range(14))
    assert not lay.shared_cores
    one = layout(1, {0, 1})
    assert one.edge_cpus == [{0}] and one.client_cpus == {1} and not one.shared_cores
    # Nothing left for the clients: they share every core, and it says so.
    two = layout(2, {0, 1})
    assert two.client_cpus == {0, 1} and two.shared_cores
    given = layout(3, sixteen, server_cpus="2-3", client_cpus="8-9", bus_cpus="4")
    assert given.edge_cpus == [{2}, {3}, {2}]
    assert given.infra_cpus == {4} and given.client_cpus == {8, 9}
