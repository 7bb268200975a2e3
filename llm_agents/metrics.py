"""Prometheus metrics of the agents, in the registry of the process that runs
them (the edge node's in ``liveroom serve``; one of their own in ``liveroom
agents``, served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.replies = Counter(
            "liveroom_agent_replies_total",
            "Agent replies by outcome (ok, error, cancelled, declined)",
            ["agent", "outcome"], registry=r)
        self.tokens = Counter("liveroom_agent_tokens_total",
                              "Tokens charged, by kind (prompt, completion)",
                              ["agent", "kind"], registry=r)
        self.dropped = Counter("liveroom_agent_triggers_dropped_total",
                               "Triggers dropped by the bounded queue", ["agent"], registry=r)
        self.stage = Counter(
            "liveroom_agent_stage_changes_total",
            "Stage parts of replies: applied, or the reason they were refused",
            ["agent", "outcome"], registry=r)
        self.first_token = Histogram(
            "liveroom_agent_first_token_seconds", "From the start of a reply to its first text",
            ["agent"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=r)
