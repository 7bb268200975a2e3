"""Headless fan-out benchmark: one big room, S viewers, a fixed offered rate.

    python -m loadtest.bench_fanout --viewers 1000 --rate 50000 --duration 5
    python -m loadtest.bench_fanout --viewers 1000 --rate 50000 --peer python-socketio
    python -m loadtest.bench_fanout --viewers 1000 --rate 50000 --peer nchan
    python -m loadtest.side_by_side       # issue 18's table, liveroom and nchan, alternating

prints one JSON line on stdout (logs go to stderr).

Theory of operation
-------------------
The parent starts the server (``liveroom serve`` on port 0, or attaches to
``--url``), pinned to ``--server-cpu``. It then spawns ``--clients`` viewer
processes pinned to ``--client-cpu``; each runs uvloop and one raw
``asyncio.Protocol`` per connection (hand-made HTTP upgrade, masked client
frames, a minimal incremental parser for the server's unmasked frames). A
publisher process (also on the client cores) joins the room as a host and
sends actions at ``rate / viewers`` messages per second, paced by a 1 ms tick
(the due number of messages per tick, one write), open loop: it never waits
for the server.

Counting stays cheap so that the client is not the bottleneck:
- warm-up messages have kind ``warm``, measured ones kind ``bench``; a viewer
  counts deliveries with one ``bytes.count`` of the bench marker over the
  complete frames of each read, so a ``batch`` frame counts as its messages;
- latency is taken on *probe* connections only (about ``PROBES`` of them,
  spread evenly over the connection order): they decode every frame and
  subtract the publisher's send time (``body.t``, wall clock) from the
  receive time;
- each viewer process keeps a timeline of its cumulative count (every 20 ms),
  so the parent reads the deliveries inside the measured window without a
  round trip.

delivered_per_s is the deliveries received between the first and last
measured send, divided by the duration; loss is 1 - delivered/expected after a
bounded drain, expected being messages sent x viewers joined. CPU comes from
/proc/<pid>/stat over the measured window and RSS from /proc/<pid>/status
(after the viewers joined minus before they connected, per connection).
``*_saturated`` is set when a side used more than 90% of its cores: a reader
then knows which side limited the figures.

``--peer python-socketio`` runs the same load against a python-socketio
server (aiohttp + uvloop, ``loadtest.socketio_peer``), pinned to the same
core, one after the other; the viewers then speak Engine.IO v4 / Socket.IO v5
over WebSocket and the server emits the same action object to the room.
``--peer nchan`` does the same with nginx + nchan (Debian's ``nginx`` and
``libnginx-mod-nchan``, ``loadtest.nchan_peer``): one worker on the server's
core, whose CPU and RSS are read; viewers subscribe over WebSocket, the
publisher POSTs the action object over pipelined keep-alive HTTP/1.1 and
nchan sends it as it is, one text frame per message. ``--server`` measures
one of the three alone (``loadtest.side_by_side`` runs each side so).

server_us_per_delivery is the server process's CPU (user + system, all its
threads; nchan: its worker) over the measured window divided by the
deliveries counted in that window. On loopback the system part includes the
kernel's TCP work for the receiving side too (most of a send's cost), so it
follows the machine's syscall cost: compare servers measured in the same run.

Where the pieces live: the raw client in ``loadtest.wsclient``, the viewer
and publisher processes in ``loadtest.fanout_clients``, the server processes
in ``loadtest.servers`` (the peers themselves in ``loadtest.socketio_peer`` and
``loadtest.nchan_peer``), the flags in ``loadtest.fanout_args``, the
/proc readings and CPU pinning in ``loadtest.procstat``, the ``--find-max``
search in ``loadtest.maxrate``, the arithmetic of the figures in
``loadtest.benchstats``, the characters of ``--compare-agent-rooms`` (an
agents process seated in other rooms) in ``loadtest.seated_agents``; this
module holds one run and the command line.
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
from typing import Any
from urllib.parse import urlsplit

from loadtest import maxrate
from loadtest.benchstats import delivery_figures, finite, gained_between, ratio
from loadtest.fanout_args import parser
from loadtest.fanout_clients import Clients, ClientSpec, client_process, recv, stop_clients
from loadtest.procstat import (
    core_ticks,
    cpu_seconds,
    cpu_times,
    parse_cpus,
    pin,
    raise_nofile,
    rss_bytes,
    run_delay,
    write_calls,
)
from loadtest.seated_agents import SeatedAgents
from loadtest.servers import SERVER_PATHS, start_liveroom, start_server, writes_counted
from loadtest.socketio_peer import serve_socketio
from loadtest.wsclient import JSON, LIVEROOM, SOCKETIO, STATE_SECTION

log = logging.getLogger("liveroom.bench")

DEFAULT_SECRET = "bench-fanout-secret-0123456789abcdef"
# Connections that decode every frame for latency; the others only count.
PROBES = 100
SATURATED = 0.9


# --------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------
@dataclass
class Target:
    mode: str
    host: str
    port: int
    path: str
    pid: int | None  # the server's, when known: CPU and RSS readings
    publish_path: str | None = None  # the publisher's, when not ``path`` (nchan)
    # Whether its frame writes can be counted (loadtest.servers.writes_counted).
    writes_counted: bool = True


def run_one(args: argparse.Namespace, target: Target, secret: str,
            server_cpus: set[int] | None, client_cpus: set[int] | None) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    viewers = args.viewers
    nproc = max(1, min(args.clients, viewers))
    codec = args.codec if target.mode == LIVEROOM else JSON
    stride = max(1, viewers // PROBES)
    cpus = frozenset(client_cpus) if client_cpus else None
    clients = Clients()
    rss_before = rss_bytes(target.pid) if target.pid else 0
    result: dict[str, Any] = {
        "server": target.mode, "viewers": viewers, "clients": nproc, "codec": codec,
        "payload_bytes": args.payload_bytes, "duration_s": args.duration,
        "warmup_s": args.warmup,
        "coalesce_window_s": args.coalesce_window if target.mode == LIVEROOM else None,
        "offered_target_per_s": args.rate,
    }
    try:
        t_connect = time.time()
        first = 0
        for k in range(nproc):
            count = viewers // nproc + (1 if k < viewers % nproc else 0)
            spec = ClientSpec(target.mode, target.host, target.port, target.path, codec,
                              secret, first, count, stride, cpus)
            first += count
            parent_end, child_end = ctx.Pipe()
            p = ctx.Process(target=client_process, args=(spec, child_end, False), daemon=True)
            p.start()
            child_end.close()
            clients.viewers.append((p, parent_end))
        joined = 0
        errors: list[str] = []
        setup_timeout = 60.0 + viewers / 100
        for _, pipe in clients.viewers:
            msg = recv(pipe, setup_timeout, "ready")
            joined += msg[1]
            errors += msg[2]
        log.info("%s: %d/%d viewers joined in %.1f s%s", target.mode, joined, viewers,
                 time.time() - t_connect, f" (errors: {errors})" if errors else "")
        if joined == 0:
            raise RuntimeError(f"no viewer could join: {errors}")
        time.sleep(0.3)  # let the server settle (and free the handshakes' garbage)
        rss_after = rss_bytes(target.pid) if target.pid else 0

        pub_spec = ClientSpec(target.mode, target.host, target.port,
                              target.publish_path or target.path, codec,
                              secret, 0, 1, 0, cpus, role="host", state=bool(args.state_hz))
        parent_end, child_end = ctx.Pipe()
        p = ctx.Process(target=client_process, args=(pub_spec, child_end, True), daemon=True)
        p.start()
        child_end.close()
        clients.publisher = (p, parent_end)
        msg = recv(parent_end, 30.0, "ready")
        if msg[1] != 1:
            raise RuntimeError(f"the publisher could not join: {msg[2]}")

        msg_rate = args.state_hz or args.rate / viewers
        t_start = time.time() + 0.2
        t0 = t_start + args.warmup
        t1 = t0 + args.duration
        parent_end.send(("go", t_start, t0, t1, msg_rate, args.payload_bytes))
        pids = {"server": target.pid, "publisher": p.pid,
                "viewers": [vp.pid for vp, _ in clients.viewers]}
        time.sleep(max(0.0, t0 - time.time()))
        cpu0 = _cpu_snapshot(pids)
        cores0 = core_ticks(server_cpus), core_ticks(client_cpus)
        w0 = time.time()
        time.sleep(max(0.0, t1 - time.time()))
        cpu1 = _cpu_snapshot(pids)
        cores1 = core_ticks(server_cpus), core_ticks(client_cpus)
        w1 = time.time()
        published = recv(parent_end, 30.0, "published")[1]

        # Drain: until every expected delivery arrived, bounded.
        expected = published["bench"] * joined
        drain_start = time.time()
        delivered_total = 0
        while True:
            delivered_total = 0
            for _, pipe in clients.viewers:
                pipe.send(("count",))
            for _, pipe in clients.viewers:
                delivered_total += recv(pipe, 10.0, "count")[1]
            if delivered_total >= expected or time.time() - drain_start >= args.drain:
                break
            time.sleep(0.05)
        drain_s = time.time() - drain_start
        rss_end = rss_bytes(target.pid) if target.pid else 0

        outs = []
        for _, pipe in clients.all():
            pipe.send(("stop",))
        for _, pipe in clients.viewers:
            outs.append(recv(pipe, 30.0, "result")[1])
    finally:
        stop_clients(clients)

    samples = sorted(s * 1000.0 for out in outs for s in out["samples"])
    in_window = gained_between(outs, t0, t1, 1)
    frames_in_window = gained_between(outs, t0, t1, 2)
    bytes_in_window = gained_between(outs, t0, t1, 3)
    actions_in_window = gained_between(outs, t0, t1, 4)
    delivered_total = sum(o["delivered"] for o in outs)
    wall = w1 - w0
    server_cpu = (cpu1["server"] - cpu0["server"]) / wall if target.pid else None
    client_cpu_s = cpu1["clients"] - cpu0["clients"]
    n_client_cores = len(client_cpus) if client_cpus else (os.cpu_count() or 1)
    client_cpu = client_cpu_s / wall / n_client_cores
    (sb0, ss0, st0), (cb0, _, ct0) = cores0
    (sb1, ss1, st1), (cb1, _, ct1) = cores1
    server_core_busy = (sb1 - sb0) / (st1 - st0) if st1 > st0 else 0.0
    client_core_busy = (cb1 - cb0) / (ct1 - ct0) if ct1 > ct0 else 0.0
    server_softirq = (ss1 - ss0) / (st1 - st0) if st1 > st0 else 0.0
    # What ran on the server's core besides the server and softirq: other
    # processes of the machine. Figures from a run with much of it are noise.
    server_core_other = (max(0.0, server_core_busy - server_cpu - server_softirq)
                         if server_cpus and server_cpu is not None else None)
    if server_core_other is not None and server_core_other > 0.1:
        log.warning("%s: other processes used %.0f%% of the server's core during the run",
                    target.mode, 100 * server_core_other)
    closes: dict[str, int] = {}
    for o in outs:
        for code, n in o["closes"].items():
            closes[str(code)] = closes.get(str(code), 0) + n
    delivered_per_s = in_window / args.duration
    if args.state_hz:
        # Latest-wins: a viewer that falls behind gets the newest value, not
        # every value, so "loss" is expected there; what must hold is that
        # no probe ever went back to an older value and every probe ended on
        # the last one published.
        last = published["warm"] + published["bench"]
        finals = [s for o in outs for s in o["last_seq"]]
        result["state"] = {
            "section": STATE_SECTION, "hz": args.state_hz, "last_published": last,
            "probes": len(finals),
            "probes_ending_on_last": sum(1 for s in finals if s == last),
            "regressions": sum(o["regressions"] for o in outs),
        }
    result.update({
        "viewers_joined": joined,
        **delivery_figures(published["bench"], joined, args.duration, delivered_per_s,
                           delivered_total, expected, drain_s, samples),
        # Averages over the measured window (batch frames make the first > 1).
        # Every action the viewers got in the window, warm-up backlog included.
        "delivered_all_per_s": round(actions_in_window / args.duration, 1),
        "messages_per_frame": round(actions_in_window / frames_in_window, 2)
        if frames_in_window else None,
        "wire_bytes_per_delivery": round(bytes_in_window / actions_in_window, 1)
        if actions_in_window else None,
        "connections_lost": sum(o["lost"] for o in outs),
        "close_codes": closes,
        "server_rss_mb": round(rss_after / 2**20, 1) if target.pid else None,
        # After the drain: growth here is what queued in the server's buffers.
        "server_rss_end_mb": round(rss_end / 2**20, 1) if target.pid else None,
        "rss_per_connection": round((rss_after - rss_before) / joined) if target.pid else None,
        "server_cpu": round(server_cpu, 3) if server_cpu is not None else None,
        # The kernel's share: on loopback the sender's send() also runs the
        # receiver's TCP input, so most of a write's cost shows up here.
        "server_cpu_sys": round((cpu1["server_sys"] - cpu0["server_sys"]) / wall, 3)
        if target.pid else None,
        "server_us_per_delivery": round((cpu1["server"] - cpu0["server"]) * 1e6 / in_window, 3)
        if target.pid and in_window else None,
        # write()/writev() calls per delivery: under 1 when the server (or,
        # for nchan, the kernel's full socket buffers) merged frames per call;
        # None where they cannot be counted (an edge's send loop in C sends
        # with send(2): its frames a connection are 1 / messages_per_frame).
        "server_writes_per_delivery": round(
            (cpu1["server_writes"] - cpu0["server_writes"]) / in_window, 3)
        if target.pid and in_window and target.writes_counted else None,
        "client_cpu": round(client_cpu, 3),
        "client_cpu_cores": n_client_cores,
        "publisher_cpu": round((cpu1["publisher"] - cpu0["publisher"]) / wall, 3),
        # Whole-core view (/proc/stat): every process and softirq on the cores.
        "server_core_busy": round(server_core_busy, 3) if server_cpus else None,
        "server_core_softirq": round(server_softirq, 3) if server_cpus else None,
        "server_core_other": round(server_core_other, 3)
        if server_core_other is not None else None,
        # Share of the window the server's loop was runnable but off its core.
        "server_run_delay": round((cpu1["server_delay"] - cpu0["server_delay"]) / wall, 4)
        if target.pid else None,
        "client_core_busy": round(client_core_busy, 3) if client_cpus else None,
        "server_saturated": bool(server_cpu is not None and server_cpu > SATURATED)
        or bool(server_cpus and target.pid and server_core_busy > SATURATED),
        "client_saturated": client_cpu > SATURATED
        or bool(client_cpus and client_core_busy > SATURATED),
    })
    return result


def _cpu_snapshot(pids: dict[str, Any]) -> dict[str, float]:
    pub = cpu_seconds(pids["publisher"])
    server_user, server_sys = cpu_times(pids["server"]) if pids["server"] else (0.0, 0.0)
    return {
        "server": server_user + server_sys,
        "server_sys": server_sys,
        "server_writes": write_calls(pids["server"]) if pids["server"] else 0,
        "server_delay": run_delay(pids["server"]) if pids["server"] else 0.0,
        "publisher": pub,
        "clients": pub + sum(cpu_seconds(pid) for pid in pids["viewers"]),
    }


# --------------------------------------------------------------------------
# Command line (its flags: loadtest.fanout_args)
# --------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.serve_socketio is not None:
        serve_socketio(args.serve_socketio)
        return 0
    if args.find_max and (args.state_hz or args.url):
        raise SystemExit("--find-max starts its own servers and measures actions")
    if args.state_hz and (args.peer or args.server != LIVEROOM):
        raise SystemExit("--state-hz measures liveroom's state path: no --peer or --server")
    if args.server != LIVEROOM and (args.url or args.agents or args.compare_agents
                                    or args.compare_agent_rooms):
        raise SystemExit("--url and the agent flags measure liveroom: no --server")
    if args.peer == args.server:
        raise SystemExit("--peer must differ from --server")
    if args.viewers < 1 or args.rate <= 0 or not 0 < args.duration <= 60:
        raise SystemExit("need --viewers >= 1, --rate > 0 and 0 < --duration <= 60")
    raise_nofile(args.viewers + 1024)
    available = os.sched_getaffinity(0)
    server_cpus: set[int] | None = parse_cpus(args.server_cpu) & available
    client_cpus: set[int] | None = parse_cpus(args.client_cpu) & available
    if not server_cpus or not client_cpus or len(available) < 2:
        log.warning("not pinning: the server and the clients would share cores")
        server_cpus = client_cpus = None
    elif server_cpus & client_cpus:
        log.warning("server and clients share CPUs %s", sorted(server_cpus & client_cpus))
    pin(client_cpus)  # the parent and its children stay off the server's core

    modes = [args.server] + ([args.peer] if args.peer else [])
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as data_dir:
        if args.find_max:
            found: dict[str, Any] = {m: find_max(args, m, data_dir, server_cpus, client_cpus)
                                     for m in modes}
            if args.peer:
                found["ratio_max"] = ratio(found[args.server]["max_kept_up_per_s"],
                                           found[args.peer]["max_kept_up_per_s"])
            print(json.dumps(finite(found), allow_nan=False), flush=True)
            return 0
        if args.url:
            secret = os.environ.get("LIVEROOM_JWT_SECRET")
            if not secret:
                raise SystemExit("--url needs LIVEROOM_JWT_SECRET (the edge's secret)")
            u = urlsplit(args.url)
            # Its send loop is not known: its writes are not counted.
            target = Target(LIVEROOM, u.hostname or "127.0.0.1", u.port or 80,
                            u.path or "/ws", args.server_pid, writes_counted=False)
            results[LIVEROOM] = run_one(args, target, secret, server_cpus, client_cpus)
            modes = modes[1:]
        elif args.compare_agents or args.compare_agent_rooms:
            modes = modes[1:]
            for key, n in (("without_agents", 0), ("with_agents", args.compare_agents)):
                args.agents = n
                srv = start_liveroom(args, f"{data_dir}/{key}", DEFAULT_SECRET, server_cpus)
                seated = SeatedAgents(args, srv.port, f"{data_dir}/{key}-agents", DEFAULT_SECRET,
                                      client_cpus) if key == "with_agents" and \
                    args.compare_agent_rooms else None
                try:
                    target = Target(LIVEROOM, "127.0.0.1", srv.port, "/ws", srv.pid,
                                    writes_counted=writes_counted(srv))
                    if seated is not None:
                        seated.start()
                    results[key] = run_one(args, target, DEFAULT_SECRET, server_cpus,
                                           client_cpus)
                    results[key]["agents"] = n
                finally:
                    if seated is not None:
                        results.setdefault(key, {})["seated"] = seated.stop()
                    srv.stop()
        for mode in modes:
            results[mode] = measure(args, mode, data_dir, server_cpus, client_cpus)
    if args.compare_agents or args.compare_agent_rooms:
        base, loaded = results["without_agents"], results["with_agents"]
        out: dict[str, Any] = {
            **results, "agent_backend": args.agent_backend,
            "ratio_p99_latency": ratio(loaded["latency_ms"]["p99"], base["latency_ms"]["p99"]),
            "ratio_p50_latency": ratio(loaded["latency_ms"]["p50"], base["latency_ms"]["p50"]),
            # The agents' own words: actions beyond the bench ones, per second.
            "agent_actions_per_s": round(
                (loaded["delivered_all_per_s"] - loaded["delivered_per_s"])
                / max(1, loaded["viewers_joined"]), 1)}
    elif args.peer is None:
        out = results[args.server]
    else:
        ours, theirs = results[args.server], results[args.peer]
        out = {args.server: ours, args.peer: theirs,
               "ratio_delivered": ratio(ours["delivered_per_s"], theirs["delivered_per_s"]),
               "ratio_server_cpu_per_delivery": ratio(theirs["server_us_per_delivery"],
                                                       ours["server_us_per_delivery"]),
               "ratio_p99_latency": ratio(theirs["latency_ms"]["p99"],
                                           ours["latency_ms"]["p99"])}
    print(json.dumps(finite(out), allow_nan=False), flush=True)
    return 0


def measure(args: argparse.Namespace, mode: str, data_dir: str, server_cpus: set[int] | None,
            client_cpus: set[int] | None) -> dict[str, Any]:
    """One run against a fresh server of ``mode`` (``loadtest.servers``)."""
    srv = start_server(mode, args, data_dir, DEFAULT_SECRET, server_cpus)
    try:
        view_path, publish_path = SERVER_PATHS[mode]
        target = Target(mode, "127.0.0.1", srv.port, view_path, srv.pid, publish_path,
                        writes_counted(srv))
        result = run_one(args, target, DEFAULT_SECRET, server_cpus, client_cpus)
        if mode == LIVEROOM:
            result["agents"] = args.agents
        return result
    finally:
        srv.stop()


def find_max(args: argparse.Namespace, mode: str, data_dir: str, server_cpus: set[int] | None,
             client_cpus: set[int] | None) -> dict[str, Any]:
    """The highest offered rate one server keeps up with (``loadtest.maxrate``).
    A fresh server per trial, so no trial inherits another's backlog. A peer
    starts at ``--peer-rate`` (python-socketio: ``--rate`` / 10 by default)."""
    def trial_at(rate: float) -> dict[str, Any]:
        return measure(argparse.Namespace(**{**vars(args), "rate": rate}), mode, data_dir,
                       server_cpus, client_cpus)

    first = args.rate if mode == args.server else \
        (args.peer_rate or (args.rate / 10 if mode == SOCKETIO else args.rate))
    return {"server": mode, "viewers": args.viewers,
            **maxrate.find_max(trial_at, first, args.max_p99)}


if __name__ == "__main__":
    sys.exit(main())
