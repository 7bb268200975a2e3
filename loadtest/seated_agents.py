"""``bench_fanout --compare-agent-rooms N``: the characters of one agents
process, seated in N other rooms of the same server, answering triggers at
a fixed rate while the 2,000-viewer room is measured (docs/BENCHMARKS.md,
*Characters in 100 rooms beside a big room*).

- ``liveroom agents`` (its own process, pinned to the client cores at nice
  ``NICE`` with the trigger process: in production it runs on its own host,
  and it must not delay the measuring viewers' reads) connects to the measured
  ``liveroom serve`` with ``--edge-url``; the scripted backend answers
  every call with the character's line, one word every
  ``--agent-word-delay`` seconds, so every reply takes a fixed time;
- ``quinn`` is seated in the rooms ``seated-0`` .. ``seated-<N-1>`` through
  the seats API (``POST /v1/rooms/{room}/agents`` on the agents process,
  with the backend key), as a backend would seat her. Each seat is one
  WebSocket connection of the user ``quinn``, so the server is started
  with ``--max-conns-per-user`` above N (``loadtest.servers``; the default
  32 would leave all but 32 of her rooms empty), in both runs;
- a trigger process (also on the client cores) is a viewer of every one of
  those rooms (10 rooms a connection) and triggers Quinn at
  ``--agent-trigger-rate`` a second in total, the rooms in turn: every
  ``GIFT_EVERY``-th trigger a gift (the gateway's highest priority), the
  others mentions; it reads everything the rooms send (the replies' deltas,
  the says, the stage writes) and counts the says;
- the agents process's ``/metrics``, read when the measured run starts and
  when it ends, give the model gateway's queue wait per priority over that
  time (``liveroom_model_queue_wait_seconds``: p50 and p99 interpolated in
  its buckets, as Prometheus' ``histogram_quantile`` does) and the replies
  the agents process counted (``liveroom_agent_replies_total``).

Quinn's cooldown is lifted and the quotas are off, so every trigger is
answered unless the model gateway refuses it. The measured room is not
touched by any of this: whatever its p99 loses is the edge's work for the
other rooms (their actions, state writes and joins) on the same core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
import urllib.request
from multiprocessing.connection import Connection
from typing import Any

from loadtest.fanout_clients import recv
from loadtest.procstat import cpu_seconds
from loadtest.servers import ServerProcess

API_KEY = "bench-api-key"  # loadtest.servers.start_liveroom's
CHARACTER = "quinn"
GIFT_EVERY = 5  # one trigger in 5 is a gift, the others mentions
# The agents and trigger processes share the client core with the measuring
# viewers only because the machine has two cores: in production they run on
# other hosts. Niced, they never delay a viewer's read of a fan-out batch.
NICE = 10
ROOMS_PER_CONNECTION = 10  # the edge's default max_rooms_per_conn


def room_name(i: int) -> str:
    return f"seated-{i}"


class SeatedAgents:
    """The agents process, its seats and the trigger process, around one run."""

    def __init__(self, args: argparse.Namespace, edge_port: int, data_dir: str, secret: str,
                 cpus: set[int] | None) -> None:
        self.args = args
        self.edge_port = edge_port
        self.data_dir = data_dir
        self.secret = secret
        self.cpus = cpus
        self.agents: ServerProcess | None = None
        self.triggers: tuple[multiprocessing.process.BaseProcess, Connection] | None = None
        self._cpu0 = 0.0
        self._t0 = 0.0
        self._metrics0: dict[str, Any] = {}

    def start(self) -> SeatedAgents:
        rooms = self.args.compare_agent_rooms
        env = {**os.environ, "LIVEROOM_JWT_SECRET": self.secret, "LIVEROOM_API_KEY": API_KEY,
               "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "liveroom.cli", "agents", "--no-agents",
               "--edge-url", f"ws://127.0.0.1:{self.edge_port}/ws", "--port", "0",
               "--data-dir", self.data_dir, "--node-id", "bench-agents",
               "--agent-backend", "scripted",
               "--agent-word-delay", str(self.args.agent_word_delay),
               "--agent-cooldown", "0", "--agent-max-seats", str(max(100, rooms)),
               "--quota-room-per-day", "0", "--quota-user-per-day", "0"]
        self.agents = ServerProcess(cmd, env, self.cpus).start()
        _renice(self.agents.pid, NICE)
        base = f"http://127.0.0.1:{self.agents.port}"
        for i in range(rooms):
            _seat(base, room_name(i))
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=trigger_process, daemon=True, args=(
            self.edge_port, self.secret, rooms, self.args.agent_trigger_rate, self.cpus,
            child))
        proc.start()
        child.close()
        self.triggers = (proc, parent)
        # Steady state before the measured run: a reply seen in most rooms.
        try:
            recv(parent, 60.0 + rooms / 5, "ready")
        except TimeoutError:
            raise RuntimeError("the seated characters did not answer in 90 % of their rooms; "
                               "the agents process's log:\n"
                               + "".join(self.agents.log[-20:])) from None
        self._metrics0 = _scrape(base)
        self._cpu0, self._t0 = cpu_seconds(self.agents.pid), time.time()
        return self

    def stop(self) -> dict[str, Any]:
        """The agents' figures over the whole time they were triggered."""
        out: dict[str, Any] = {"agent_rooms": self.args.compare_agent_rooms,
                               "agent_word_delay_s": self.args.agent_word_delay}
        try:
            if self.triggers is not None:
                _, pipe = self.triggers
                pipe.send(("stop",))
                out.update(recv(pipe, 30.0, "result")[1])
            if self.agents is not None and self.agents.exited() is None:
                wall = time.time() - self._t0
                out["agents_process_cpu"] = round(
                    (cpu_seconds(self.agents.pid) - self._cpu0) / wall, 3)
                if self._metrics0:
                    out.update(_gateway_figures(
                        self._metrics0, _scrape(f"http://127.0.0.1:{self.agents.port}"), wall))
        finally:
            if self.triggers is not None:
                proc, _ = self.triggers
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
            if self.agents is not None:
                self.agents.stop()
        return out


def _renice(pid: int, nice: int) -> None:
    """Every thread of ``pid`` (setpriority on Linux sets one thread's)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
        except (ProcessLookupError, PermissionError):
            pass


def _seat(base: str, room: str) -> None:
    req = urllib.request.Request(
        f"{base}/v1/rooms/{room}/agents", method="POST",
        data=json.dumps({"character": CHARACTER}).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        if r.status not in (200, 201):
            raise RuntimeError(f"seating {CHARACTER} in {room}: HTTP {r.status}")


def _scrape(base: str) -> dict[str, Any]:
    """The agents process's queue-wait buckets per priority (cumulative, by
    upper bound) and its replies by outcome, from its ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        text = r.read().decode()
    waits: dict[str, dict[float, float]] = {}
    replies: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "liveroom_model_queue_wait_seconds_bucket":
                waits.setdefault(sample.labels["priority"], {})[
                    float(sample.labels["le"])] = sample.value
            elif sample.name == "liveroom_agent_replies_total":
                outcome = sample.labels["outcome"]
                replies[outcome] = replies.get(outcome, 0.0) + sample.value
    return {"waits": waits, "replies": replies}


def _gateway_figures(before: dict[str, Any], after: dict[str, Any],
                     wall: float) -> dict[str, Any]:
    """Queue wait p50/p99 per priority and replies a second between two scrapes."""
    waits: dict[str, Any] = {}
    for prio, buckets in after["waits"].items():
        old = before["waits"].get(prio, {})
        delta = sorted((le, n - old.get(le, 0.0)) for le, n in buckets.items())
        total = delta[-1][1] if delta else 0.0
        if total > 0:
            waits[prio] = {"n": int(total), "p50": bucket_quantile(delta, 0.5),
                           "p99": bucket_quantile(delta, 0.99)}
    replies = {k: v - before["replies"].get(k, 0.0) for k, v in after["replies"].items()}
    return {"queue_wait_s": waits,
            "agents_replies_per_s": {k: round(v / wall, 2) for k, v in sorted(replies.items())}}


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The q-quantile of a histogram given as (upper bound, cumulative count)
    pairs in ascending order (the last bound +Inf): linear inside the bucket
    it falls in, as Prometheus' ``histogram_quantile``; the largest finite
    bound when it falls in the +Inf bucket."""
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for le, n in buckets:
        if n >= rank and n > below:
            if le == float("inf"):
                return lower
            return round(lower + (le - lower) * (rank - below) / (n - below), 6)
        lower, below = le, n
    return lower


# --------------------------------------------------------------------------
# The trigger process
# --------------------------------------------------------------------------
def trigger_process(port: int, secret: str, rooms: int, rate: float,
                    cpus: set[int] | None, pipe: Connection) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    os.nice(NICE)
    asyncio.run(_triggers(port, secret, rooms, rate, pipe))


async def _triggers(port: int, secret: str, rooms: int, rate: float,
                    pipe: Connection) -> None:
    # Imported here: the spawned child needs only what it uses.
    from edge.auth import mint_token
    from edge.client import LiveroomClient

    url = f"ws://127.0.0.1:{port}/ws"
    clients: list[LiveroomClient] = []
    replied: set[str] = set()
    counts = {"says": 0, "errors": 0, "cancelled": 0}

    async def read(client: LiveroomClient) -> None:
        while True:
            frame = await client.recv(timeout=None)
            if frame.get("type") == "action" and frame.get("kind") == "agent.say":
                body = frame.get("body") or {}
                key = "errors" if "error" in body else "cancelled" if "cancelled" in body \
                    else "says"
                counts[key] += 1
                replied.add(str(frame.get("room")))

    for k in range(0, rooms, ROOMS_PER_CONNECTION):
        user = f"trigger{k // ROOMS_PER_CONNECTION}"
        token = mint_token(secret, user, user, "viewer", time.time(), 3600.0, None)
        client = await LiveroomClient.connect(url, token, codec="json", timeout=30.0)
        for i in range(k, min(rooms, k + ROOMS_PER_CONNECTION)):
            await client.join(room_name(i))
        clients.append(client)
    readers = [asyncio.create_task(read(c)) for c in clients]
    loop = asyncio.get_running_loop()
    sent = 0
    start = loop.time()
    ready = False
    stop: asyncio.Future[Any] = loop.create_future()

    def on_command() -> None:
        if not stop.done():
            stop.set_result(pipe.recv())

    loop.add_reader(pipe.fileno(), on_command)
    while not stop.done():
        due = int((loop.time() - start) * rate)
        while sent < due:
            i = sent % rooms
            client = clients[i // ROOMS_PER_CONNECTION]
            if sent % GIFT_EVERY == GIFT_EVERY - 1:
                await client.action(room_name(i), "gift", {"gift": "rose", "count": 1})
            else:
                await client.action(room_name(i), "comment",
                                    {"text": f"{CHARACTER}, hello #{sent}"})
            sent += 1
        if not ready and sent >= rooms and len(replied) >= 0.9 * rooms:
            ready = True
            pipe.send(("ready",))
            start, sent = loop.time(), 0
            counts.update(says=0, errors=0, cancelled=0)
        await asyncio.sleep(0.005)
    elapsed = loop.time() - start
    loop.remove_reader(pipe.fileno())
    for t in readers:
        t.cancel()
    for c in clients:
        await c.close()
    pipe.send(("result", {
        "agent_trigger_rate": rate, "triggers": sent,
        "triggers_per_s": round(sent / elapsed, 2),
        "agent_replies_per_s": round(counts["says"] / elapsed, 2),
        "agent_replies_error": counts["errors"], "agent_replies_cancelled": counts["cancelled"],
        "agent_rooms_answered": len(replied)}))
