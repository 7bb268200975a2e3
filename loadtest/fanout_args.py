"""The fan-out benchmark's command line (``python -m loadtest.bench_fanout
--help``): its flags and their defaults; ``loadtest.bench_fanout`` reads them."""

from __future__ import annotations

import argparse
import os

from loadtest.wsclient import JSON, LIVEROOM, MSGPACK, NCHAN, SOCKETIO

SERVERS = (LIVEROOM, SOCKETIO, NCHAN)
PEERS = (SOCKETIO, NCHAN)


def add_load_arguments(p: argparse.ArgumentParser, *, viewers: int, viewers_help: str,
                       budget_help: str) -> None:
    """The load's flags, shared with ``loadtest.bench_cluster``: audience,
    offered rate, the measured window and the edge's coalescing and budget."""
    p.add_argument("--viewers", type=int, default=viewers, help=viewers_help)
    p.add_argument("--rate", type=float, default=50_000.0,
                   help="offered deliveries per second (messages/s x viewers)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds (max 60)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds published before")
    p.add_argument("--drain", type=float, default=2.0,
                   help="at most this many seconds to wait for late deliveries")
    p.add_argument("--coalesce-window", type=float, default=0.005)
    p.add_argument("--outbound-budget", type=int, default=64 << 20, help=budget_help)


def parser() -> argparse.ArgumentParser:
    cpus = sorted(os.sched_getaffinity(0))
    server_default = str(cpus[0])
    client_default = ",".join(str(c) for c in cpus[1:]) or server_default
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_fanout",
                                description="Fan-out benchmark: prints one JSON line.")
    add_load_arguments(p, viewers=1000, viewers_help="viewer connections",
                       budget_help="the edge's per-connection budget; big, so that nothing "
                       "is shed")
    p.add_argument("--clients", type=int, default=1, help="viewer processes")
    p.add_argument("--codec", choices=(JSON, MSGPACK), default=JSON,
                   help="the viewers' wire variant (the socket.io peer always uses JSON)")
    p.add_argument("--payload-bytes", type=int, default=100,
                   help="padding in each message body")
    p.add_argument("--url", help="attach to a running edge (ws://host:port/ws) instead of "
                                 "starting one; tokens use $LIVEROOM_JWT_SECRET")
    p.add_argument("--server-pid", type=int,
                   help="with --url: the edge's pid, for its CPU and RSS")
    p.add_argument("--state-hz", type=float, default=0.0,
                   help="publish changes of the room's 'stage' section at this rate instead of "
                        "actions (latest-wins state; --rate is then ignored)")
    p.add_argument("--find-max", action="store_true",
                   help="search for the highest offered rate kept up with (loss <= 0.1%% and "
                        "p99 <= --max-p99): from --rate up by x1.4 per trial, then one step "
                        "back by x1.15; prints the trials and the best")
    p.add_argument("--max-p99", type=float, default=100.0,
                   help="ms; with --find-max, the latency a kept-up run may not exceed")
    p.add_argument("--peer-rate", type=float,
                   help="with --find-max and --peer: the peer's first offered rate "
                        "(default: --rate / 10)")
    p.add_argument("--server", choices=SERVERS, default=LIVEROOM,
                   help="the server measured (the peers only with the default flags)")
    p.add_argument("--peer", choices=PEERS,
                   help="also run the same load against this server, and give the ratios "
                        "(nchan: nginx + libnginx-mod-nchan, loadtest/nchan_peer.py)")
    p.add_argument("--agents", type=int, default=0,
                   help="characters talking continuously in the room (loadtest/characters)")
    p.add_argument("--compare-agents", type=int, default=0, metavar="N",
                   help="run without characters, then with N, and give the p99 ratio")
    p.add_argument("--compare-agent-rooms", type=int, default=0, metavar="N",
                   help="run without, then with a liveroom agents process seating quinn in N "
                        "other rooms of the server (loadtest/seated_agents.py); the p99 ratio")
    p.add_argument("--agent-trigger-rate", type=float, default=10.0,
                   help="with --compare-agent-rooms: mentions a second over those rooms")
    p.add_argument("--agent-backend", default="scripted",
                   choices=("scripted", "openai", "embedded"))
    p.add_argument("--agent-word-delay", type=float, default=0.012)
    p.add_argument("--agent-openai-url", help="with --agent-backend openai")
    p.add_argument("--server-cpu", default=server_default, help="CPU(s) for the server")
    p.add_argument("--client-cpu", default=client_default,
                   help="CPU(s) for the viewer and publisher processes")
    p.add_argument("--serve-socketio", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return p
