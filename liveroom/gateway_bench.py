"""The model gateway under contention: queue waits per priority, replies/s.

    python -m loadtest.bench_gateway --rooms 100 --rate 12 --latency 0.5 \\
        --concurrency 4 --duration 30

(``loadtest/bench_gateway.py`` runs this module as a process of its own: it
composes the agents' parts, so it sits on the top floor with the other
composition roots.)

One agents process (this one): the character ``quinn`` seated in ``--rooms``
rooms, every one behind one ``GatewayBackend`` (``llm_agents.gateway``) in
front of a scripted model that answers each call after a fixed
``--latency`` (one server, ``--concurrency`` calls at once: capacity
``concurrency / latency`` replies a second). Triggers arrive at ``--rate``
a second, in a random room each, in a fixed mix: 10 % gifts, 40 % mentions,
20 % direct interactions (``RoomAgent.interact``, as the HTTP API calls it),
30 % ambient (a change of a watched state section). The rooms' links are
null (the words are counted, not fanned out): what is measured is the
gateway, not the edge (``bench_fanout`` measures that).

Prints one JSON line: the queue wait p50/p99 per priority (seconds, from
the gateway's own samples), calls refused (queue time, queue full), the
replies a second, and the bounds used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from edge.auth import Identity
from llm_agents.backends.base import ReplyRequest, Usage
from llm_agents.character import SHIPPED_DIR, load_characters
from llm_agents.gateway import GatewayBackend, ModelServer
from llm_agents.gateway_queue import GatewayConfig
from llm_agents.policy import PolicyConfig
from llm_agents.quota import MemoryQuotaStore, QuotaLimits
from llm_agents.runtime import AgentConfig, RoomAgent
from loadtest.benchstats import percentile


class FixedLatency:
    """A model that answers every call with one line after ``latency`` s."""

    label = "scripted"

    def __init__(self, latency: float) -> None:
        self.latency = latency

    async def stream(self, request: ReplyRequest) -> AsyncIterator[str | Usage]:
        await asyncio.sleep(self.latency)
        yield "a fixed reply"
        yield Usage(10, 3)

    async def close(self) -> None:
        return None


class NullLink:
    identity = Identity("quinn", "Quinn", "agent", 0.0)

    def __init__(self) -> None:
        self.says = 0
        self.refused = 0

    async def join(self, room: str) -> None:
        return None

    def publish(self, room: str, kind: str, body: Any) -> None:
        if kind == "agent.say" and "error" not in body and "cancelled" not in body:
            self.says += 1
        elif kind == "agent.say" and body.get("error") == "model_busy":
            self.refused += 1

    async def write_state(self, room: str, section: str, value: Any,
                          expected: int | None) -> tuple[int, int]:
        return 1, 1

    async def section_partial(self, room: str, section: str) -> int:
        return 0

    async def close(self) -> None:
        return None


def frame(room: str, kind: str, i: int) -> dict[str, Any]:
    sender = {"id": f"u{i}", "name": f"U{i}", "role": "viewer"}
    if kind == "gift":
        return {"type": "action", "room": room, "kind": "gift", "seq": i, "from": sender,
                "body": {"gift": "rose", "count": 1}}
    if kind == "mention":
        return {"type": "action", "room": room, "kind": "comment", "seq": i, "from": sender,
                "body": {"text": "quinn, hello"}}
    return {"type": "state", "room": room, "section": "meta", "value": {"n": i}, "partial": i}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    quinn = load_characters([SHIPPED_DIR])["quinn"]
    quinn = replace(quinn, cooldown_s=0.0, reacts=replace(quinn.reacts, sections=("meta",),
                                                          silence_s=0.0, questions=False))
    config = GatewayConfig(concurrency=args.concurrency, queue_size=args.queue,
                           max_wait_s=args.max_wait)
    gateway = GatewayBackend("bench", [ModelServer("fixed", FixedLatency(args.latency))],
                             config)
    quota = MemoryQuotaStore(QuotaLimits(0, 0))
    links: list[NullLink] = []

    def make_link(_: Any) -> NullLink:
        links.append(NullLink())
        return links[-1]

    agent_config = AgentConfig(policy=PolicyConfig(queue_size=8, stale_after_s=60.0))
    agents = [RoomAgent(quinn, f"room-{i}", gateway, quota, agent_config, make_link)
              for i in range(args.rooms)]
    for a in agents:
        await a.start()
    rng = random.Random(1)
    kinds = ["gift"] * 10 + ["mention"] * 40 + ["interaction"] * 20 + ["ambient"] * 30
    interactions: set[asyncio.Task[Any]] = set()
    done_interactions = [0]
    refused_interactions = [0]

    async def interact(agent: RoomAgent, i: int) -> None:
        r = await quota.reserve(agent.room, f"u{i}", 100, time.time())
        out = await agent.interact(f"i{i}", f"u{i}", f"U{i}", "hello", r, lambda _: None)
        if not out.error:
            done_interactions[0] += 1
        elif out.error == "model_busy":
            refused_interactions[0] += 1

    start = time.monotonic()
    i = 0
    while (elapsed := time.monotonic() - start) < args.duration:
        due = int(elapsed * args.rate)
        while i < due:
            agent = agents[rng.randrange(len(agents))]
            kind = rng.choice(kinds)
            if kind == "interaction":
                t = asyncio.create_task(interact(agent, i))
                interactions.add(t)
                t.add_done_callback(interactions.discard)
            else:
                agent._on_frame(frame(agent.room, kind, i))
            i += 1
        await asyncio.sleep(0.005)
    # Drain: what is in flight or waiting ends within the queue-time limit.
    await asyncio.sleep(args.max_wait + args.latency)
    replies = sum(link.says for link in links) + done_interactions[0]
    elapsed = time.monotonic() - start
    for a in agents:
        await a.stop()
    await gateway.close()
    waits = {p: sorted(w) for p, w in gateway.waits().items()}
    refused = sum(link.refused for link in links) + refused_interactions[0]
    return {
        "rooms": args.rooms, "rate": args.rate, "latency_s": args.latency,
        "concurrency": args.concurrency, "max_wait_s": args.max_wait,
        "duration_s": args.duration, "triggers": i,
        "queue_wait_s": {p: {"n": len(w), "p50": round(percentile(w, 0.50), 4) if w else None,
                             "p99": round(percentile(w, 0.99), 4) if w else None}
                         for p, w in waits.items()},
        "refused_model_busy": refused, "replies": replies,
        "replies_per_s": round(replies / elapsed, 2),
        "capacity_per_s": round(args.concurrency / args.latency, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rooms", type=int, default=100)
    p.add_argument("--rate", type=float, default=12.0, help="triggers a second")
    p.add_argument("--latency", type=float, default=0.5, help="seconds per model call")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--queue", type=int, default=64)
    p.add_argument("--max-wait", type=float, default=10.0)
    p.add_argument("--duration", type=float, default=30.0)
    print(json.dumps(asyncio.run(run(p.parse_args()))))


if __name__ == "__main__":
    main()
