"""One room across cores: the fan-out benchmark over N ``liveroom edge`` processes.

    python -m loadtest.bench_cluster --edges 2 --viewers 4000 --rate 50000 --duration 5
    python -m loadtest.bench_cluster --compare 1,2 --viewers 4000 --rate 200000

prints one JSON line per run on stdout (``--compare``: one per run, then one
line with the ratios against the targets); logs go to stderr.

Theory of operation
-------------------
Each run starts its own cluster (``loadtest.cluster_procs``): a
``nats-server``, a ``redis-server``, a ``liveroom router`` and N ``liveroom
edge`` processes (groups ``g0`` .. ``gN-1``). The room is flagged big (state
section ``placement`` = ``{"spread": true}``): every group serves it and the
router spreads its clients by hashing a client key over the groups
(``room_router/placement.py``). The parent asks the router once per viewer
(``GET /v1/route?room=bench&client=v<i>``, the key being the viewer's user
id) and each viewer connects to the edge it was told: about V/N viewers per
edge, as the hash falls. The publisher joins edge 0 as a host and publishes
there; each action crosses NATS once per edge (edge 0 included: its bus is
NATS too), never once per viewer.

The client side is ``bench_fanout``'s (``loadtest.fanout_clients``): viewer
processes that count deliveries and time ~100 probe connections, a publisher
paced open loop at ``rate / viewers`` messages per second; the figures'
arithmetic is ``loadtest.benchstats``'s. delivered_per_s, loss and latency
mean what they mean there.

CPU is read from /proc over the measured window for every server process:
each edge, nats-server, redis-server and the router. ``cpu_us_per_delivery``
is their sum per delivery; ``bus_share`` is nats-server's part of that sum.

Where the processes run (``layout``): from ``os.sched_getaffinity`` unless
``--server-cpus`` / ``--client-cpus`` say otherwise. The server CPUs are the
first N available (edge i pinned alone to the i-th of them); nats-server,
redis-server and the router float over the server CPUs (``--bus-cpus`` to
move them); the clients (viewers, publisher, this parent) get the remaining
CPUs. On 16 cores, N = 14 leaves 2 to the clients. When nothing remains (N =
2 on 2 cores) the clients share every core with the servers:
``shared_cores`` is then true and the figures cannot show scaling honestly.
``edge_saturated`` (an edge used more than 90% of a core),
``server_saturated`` and ``client_saturated`` (a side's cores more than 90%
busy) say which side limited a run.

``--compare 1,2``: the same load for each N back to back, then
``p99_vs_ideal`` = p99(N) / (p99(1) / N) (target <= 1.3) and
``cpu_ratio`` = cpu_us_per_delivery(N) / cpu_us_per_delivery(1) (target <= 1.5).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.benchstats import delivery_figures, finite, gained_between, ratio
from loadtest.cluster_procs import BenchCluster
from loadtest.fanout_args import add_load_arguments
from loadtest.fanout_clients import Clients, ClientSpec, client_process, recv, stop_clients
from loadtest.procstat import core_ticks, cpu_seconds, parse_cpus, pin, raise_nofile
from loadtest.wsclient import JSON, LIVEROOM, MSGPACK

log = logging.getLogger("liveroom.bench")

SECRET = "bench-cluster-secret-0123456789abcdef"
PROBES = 100  # connections that time every frame, spread over the viewers
SATURATED = 0.9
# Bounds of the command line (each run starts N + 3 server processes).
MAX_EDGES = 64
MAX_VIEWERS = 200_000
P99_TARGET = 1.3  # p99(N) within this factor of p99(1) / N
CPU_TARGET = 1.5  # CPU per delivery with N edges within this factor of one edge's


@dataclass(frozen=True)
class Layout:
    """Which CPUs each side runs on (None: not pinned)."""

    edge_cpus: list[set[int]]
    infra_cpus: set[int] | None  # nats-server, redis-server, the router
    client_cpus: set[int] | None
    shared_cores: bool  # clients and servers share cores

    def to_json(self) -> dict[str, Any]:
        return {"edge_cpus": [sorted(c) for c in self.edge_cpus],
                "infra_cpus": sorted(self.infra_cpus) if self.infra_cpus else None,
                "client_cpus": sorted(self.client_cpus) if self.client_cpus else None,
                "shared_cores": self.shared_cores}


def layout(edges: int, available: set[int], server_cpus: str | None = None,
           client_cpus: str | None = None, bus_cpus: str | None = None) -> Layout:
    """Pure: the CPUs of ``edges`` edges, the bus and the clients (see the
    module docstring). Explicit sets are cut to ``available``."""
    avail = sorted(available)
    server = sorted(parse_cpus(server_cpus) & available) if server_cpus else avail[:edges]
    if not server:
        raise SystemExit(f"--server-cpus {server_cpus!r}: none of them is available {avail}")
    clients = (parse_cpus(client_cpus) & available if client_cpus
               else set(avail) - set(server)) or set(avail)
    infra = (parse_cpus(bus_cpus) & available if bus_cpus else set()) or set(server)
    edge_cpus = [{server[i % len(server)]} for i in range(edges)]
    return Layout(edge_cpus, infra, clients, bool(clients & (set(server) | infra)))


def _spawn(ctx: Any, spec: ClientSpec, publisher: bool) -> tuple[Any, Any]:
    parent_end, child_end = ctx.Pipe()
    p = ctx.Process(target=client_process, args=(spec, child_end, publisher), daemon=True)
    p.start()
    child_end.close()
    return p, parent_end


def run_one(args: argparse.Namespace, edges: int, available: set[int],
            data_dir: Path) -> dict[str, Any]:
    """One run with ``edges`` edges on ``available`` CPUs (read once, before
    any run pinned this process): start the cluster, load it, measure."""
    lay = layout(edges, available, args.server_cpus, args.client_cpus, args.bus_cpus)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    pin(lay.client_cpus)  # the parent and its children stay on the client cores
    cluster = BenchCluster(lay.edge_cpus, lay.infra_cpus, data_dir, SECRET)
    cluster.start(args)
    try:
        cluster.flag_spread()
        placed = cluster.route_viewers(args.viewers)
        return {**_measure(args, cluster, lay, placed), "started_utc": started}
    finally:
        gone = cluster.exited()
        cluster.stop()
        if gone:
            log.error("server processes ended during the run: %s", gone)


def _measure(args: argparse.Namespace, cluster: BenchCluster, lay: Layout,
             placed: list[list[int]]) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    viewers, n = args.viewers, len(cluster.edges)
    cpus = frozenset(lay.client_cpus) if lay.client_cpus else None
    stride = max(1, viewers // PROBES)
    per_edge = max(1, (args.clients or max(n, len(lay.client_cpus or ()))) // n)
    clients = Clients()
    try:
        t_connect = time.time()
        for edge, ids in zip(cluster.edges, placed, strict=True):
            for k in range(per_edge):
                chunk = tuple(ids[k::per_edge])
                if chunk:
                    spec = ClientSpec(LIVEROOM, "127.0.0.1", edge.port, "/ws", args.codec,
                                      SECRET, 0, len(chunk), stride, cpus, indices=chunk)
                    clients.viewers.append(_spawn(ctx, spec, False))
        joined, errors = 0, []
        for _, pipe in clients.viewers:
            msg = recv(pipe, 60.0 + viewers / 100, "ready")
            joined += msg[1]
            errors += msg[2]
        log.info("%d edges: %d/%d viewers joined in %.1f s%s", n, joined, viewers,
                 time.time() - t_connect, f" (errors: {errors})" if errors else "")
        if joined == 0:
            raise RuntimeError(f"no viewer could join: {errors}")
        time.sleep(0.3)
        pub = ClientSpec(LIVEROOM, "127.0.0.1", cluster.edges[0].port, "/ws", args.codec,
                         SECRET, 0, 1, 0, cpus, role="host")
        clients.publisher = _spawn(ctx, pub, True)
        pub_pipe = clients.publisher[1]
        msg = recv(pub_pipe, 30.0, "ready")
        if msg[1] != 1:
            raise RuntimeError(f"the publisher could not join: {msg[2]}")
        t_start = time.time() + 0.2
        t0, t1 = t_start + args.warmup, t_start + args.warmup + args.duration
        pub_pipe.send(("go", t_start, t0, t1, args.rate / viewers, args.payload_bytes))
        server_pids = cluster.pids()
        client_pids = [p.pid for p, _ in clients.all() if p.pid is not None]
        server_set = set().union(*lay.edge_cpus, lay.infra_cpus or set())
        time.sleep(max(0.0, t0 - time.time()))
        cpu0 = {k: cpu_seconds(pid) for k, pid in server_pids.items()}
        ccpu0 = sum(cpu_seconds(pid) for pid in client_pids)
        ticks0 = core_ticks(server_set), core_ticks(lay.client_cpus)
        w0 = time.time()
        time.sleep(max(0.0, t1 - time.time()))
        cpu1 = {k: cpu_seconds(pid) for k, pid in server_pids.items()}
        ccpu1 = sum(cpu_seconds(pid) for pid in client_pids)
        ticks1 = core_ticks(server_set), core_ticks(lay.client_cpus)
        wall = time.time() - w0
        published = recv(pub_pipe, 30.0, "published")[1]
        expected = published["bench"] * joined
        drain_start = time.time()
        while True:
            for _, pipe in clients.viewers:
                pipe.send(("count",))
            delivered_total = sum(recv(pipe, 10.0, "count")[1] for _, pipe in clients.viewers)
            if delivered_total >= expected or time.time() - drain_start >= args.drain:
                break
            time.sleep(0.05)
        drain_s = time.time() - drain_start
        for _, pipe in clients.all():
            pipe.send(("stop",))
        outs = [recv(pipe, 30.0, "result")[1] for _, pipe in clients.viewers]
    finally:
        stop_clients(clients)

    samples = sorted(s * 1000.0 for o in outs for s in o["samples"])
    in_window = gained_between(outs, t0, t1, 1)
    per_proc = {k: (cpu1[k] - cpu0[k]) / wall for k in cpu0}
    server_cpu = sum(per_proc.values())
    edge_cpu = sum(v for k, v in per_proc.items() if k.startswith("edge-"))

    def busy(i: int, col: int = 0) -> float:
        """Share of side ``i``'s cores busy (col 0) or in softirq (col 1)."""
        a, b = ticks0[i], ticks1[i]
        return (b[col] - a[col]) / (b[2] - a[2]) if b[2] > a[2] else 0.0

    n_client = len(lay.client_cpus) if lay.client_cpus else (os.cpu_count() or 1)
    client_cpu = (ccpu1 - ccpu0) / wall / n_client
    edge_sat = [per_proc[f"edge-{i}"] > SATURATED for i in range(n)]
    # What else ran on the server cores (other processes of the machine; the
    # clients too when they share them): figures with much of it are noise.
    ours = server_cpu + (client_cpu * n_client if lay.shared_cores else 0.0)
    other = max(0.0, (busy(0) - busy(0, 1)) * len(server_set) - ours) / len(server_set)
    if other > 0.1:
        log.warning("%d edges: other processes used %.0f%% of the server cores", n, 100 * other)
    return {
        "edges": n, "viewers": viewers, "viewers_joined": joined,
        "viewers_per_edge": [len(ids) for ids in placed], "client_processes": len(outs),
        "rate": args.rate, "codec": args.codec, "payload_bytes": args.payload_bytes,
        "duration_s": args.duration, "warmup_s": args.warmup,
        "coalesce_window_s": args.coalesce_window,
        **delivery_figures(published["bench"], joined, args.duration, in_window / args.duration,
                           delivered_total, expected, drain_s, samples),
        "connections_lost": sum(o["lost"] for o in outs),
        # Cores (CPU seconds per second) of each server process.
        "cpu": {k: round(v, 3) for k, v in per_proc.items()},
        "server_cpu": round(server_cpu, 3),
        "cpu_us_per_delivery": round(server_cpu * wall * 1e6 / in_window, 3)
        if in_window else None,
        "edge_us_per_delivery": round(edge_cpu * wall * 1e6 / in_window, 3)
        if in_window else None,
        "bus_share": round(per_proc["nats-server"] / server_cpu, 3) if server_cpu else None,
        "client_cpu": round(client_cpu, 3),
        "server_core_busy": round(busy(0), 3),
        "server_core_other": round(other, 3),
        "client_core_busy": round(busy(1), 3),
        "edge_saturated": edge_sat,
        "server_saturated": any(edge_sat) or busy(0) > SATURATED,
        "client_saturated": client_cpu > SATURATED or busy(1) > SATURATED,
        **lay.to_json(),
        "load_1min": round(os.getloadavg()[0], 2),
    }


def compare(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each run against the first (one edge, normally): the targets of
    the module docstring, and whether they were met."""
    base = runs[0]
    out: dict[str, Any] = {"compare": [r["edges"] for r in runs], "viewers": base["viewers"],
                           "rate": base["rate"], "base_edges": base["edges"], "runs": []}
    for r in runs[1:]:
        scale = r["edges"] / base["edges"]
        ideal = base["latency_ms"]["p99"] / scale
        p99_ratio = ratio(r["latency_ms"]["p99"], ideal)
        cpu_ratio = ratio(r["cpu_us_per_delivery"], base["cpu_us_per_delivery"])
        out["runs"].append({
            "edges": r["edges"], "p99_ms": r["latency_ms"]["p99"],
            "base_p99_ms": base["latency_ms"]["p99"], "ideal_p99_ms": round(ideal, 3),
            "p99_vs_ideal": p99_ratio, "p99_target": P99_TARGET,
            "p99_target_met": p99_ratio is not None and p99_ratio <= P99_TARGET,
            "cpu_ratio": cpu_ratio, "cpu_target": CPU_TARGET,
            "cpu_target_met": cpu_ratio is not None and cpu_ratio <= CPU_TARGET,
            "delivered_ratio": ratio(r["delivered_per_s"], base["delivered_per_s"]),
            "shared_cores": r["shared_cores"] or base["shared_cores"],
            "saturated": any(x[k] for x in (r, base)
                             for k in ("server_saturated", "client_saturated")),
        })
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_cluster",
                                description="One room over N edges: one JSON line per run.")
    p.add_argument("--edges", type=int, default=1, help=f"edge processes (1..{MAX_EDGES})")
    p.add_argument("--compare", metavar="N,N,...",
                   help="run each edge count back to back (e.g. 1,2) and print the ratios")
    add_load_arguments(p, viewers=4000, viewers_help=f"viewer connections (1..{MAX_VIEWERS})",
                       budget_help="each edge's per-connection budget; big, so that nothing "
                       "is shed")
    p.add_argument("--heartbeat", type=float, default=2.0,
                   help="the roles' heartbeat (s; 2 as deployed: each beat re-writes every "
                        "connection of an edge into Redis)")
    p.add_argument("--clients", type=int, default=0,
                   help="viewer processes (default: one per client CPU, at least one per edge)")
    p.add_argument("--codec", choices=(JSON, MSGPACK), default=JSON)
    p.add_argument("--payload-bytes", type=int, default=100,
                   help="padding in each message body")
    p.add_argument("--server-cpus", help="CPUs for the edges, one each in turn "
                                         "(default: the first N available)")
    p.add_argument("--client-cpus", help="CPUs for the viewers and the publisher "
                                         "(default: the rest; all when none is left)")
    p.add_argument("--bus-cpus", help="CPUs for nats-server, redis-server and the router "
                                      "(default: the edges' CPUs)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    counts = [int(x) for x in args.compare.split(",")] if args.compare else [args.edges]
    if not counts or not all(1 <= c <= MAX_EDGES for c in counts):
        raise SystemExit(f"edge counts must be 1..{MAX_EDGES}")
    if not 1 <= args.viewers <= MAX_VIEWERS or args.rate <= 0 or not 0 < args.duration <= 60:
        raise SystemExit(f"need 1 <= --viewers <= {MAX_VIEWERS}, --rate > 0 and "
                         "0 < --duration <= 60")
    raise_nofile(args.viewers + 1024)
    available = os.sched_getaffinity(0)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        for n in counts:
            r = run_one(args, n, available, Path(tmp) / f"n{n}-{len(runs)}")
            if r["shared_cores"]:
                log.warning("%d edges: the clients share cores with the servers; the "
                            "figures cannot show scaling", n)
            print(json.dumps(finite(r), allow_nan=False), flush=True)
            runs.append(r)
    if len(runs) > 1:
        print(json.dumps(finite(compare(runs)), allow_nan=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
