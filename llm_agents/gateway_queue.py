"""The gateway's queue in front of one model: pure decisions, time as an argument.

Theory of operation
-------------------
Every model call of a process (a character's reply in a room, a direct
interaction over HTTP) asks the queue of its model for a slot before it
runs. A model is served by one or more servers (OpenAI-compatible
endpoints, or the one in-process backend); each server runs at most
``concurrency`` calls at once. Calls beyond that wait here:

- by priority: gift (3) > mention or question (2) > direct interaction (1)
  > ambient (0: silence, a watched state change, a followed event kind);
  within a priority the oldest goes first;
- bounded: at most ``queue_size`` calls wait; one more is refused at once
  (``model_busy``, ``reason: queue_full``);
- timed: a call that waited ``max_wait_s`` without a slot is refused
  (``model_busy``, ``reason: queue_timeout``): a reply that late is no
  reply, and its caller hears it instead of waiting for ever;
- under load (``short_at``: that many calls waiting per unit of capacity),
  a call is granted ``short_factor`` of its token limit: shorter replies
  free the servers sooner;
- health: a server marked down gets nothing; a call that failed on one
  before any text comes back to the head of its priority (``requeue``) and
  is given to another (failover); with no server up, waiting calls fail
  at once (``model_unavailable``), not after the queue-time limit.

Nothing here awaits or reads a clock: ``llm_agents.gateway`` is the asyncio
adapter that turns grants into woken callers.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from llm_agents.policy import EVENT, GIFT, INTERACTION, MENTION, QUESTION, SILENCE, STATE

GATEWAY_PRIORITY: Final[Mapping[str, int]] = {
    GIFT: 3, MENTION: 2, QUESTION: 2, INTERACTION: 1, STATE: 0, EVENT: 0, SILENCE: 0,
}
PRIORITY_NAMES: Final[Mapping[int, str]] = {3: "gift", 2: "mention", 1: "interaction",
                                            0: "ambient"}

# Outcomes of ``dispatch`` other than a server index.
QUEUE_TIMEOUT: Final = "queue_timeout"
NO_SERVER: Final = "no_server"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    # Calls in flight per server.
    concurrency: int = 4
    # Calls waiting per model, beyond which one more is refused at once.
    queue_size: int = 64
    # Seconds a call may wait for a slot before it is refused.
    max_wait_s: float = 10.0
    # Replies are shortened while at least ``short_at`` calls wait per slot
    # of capacity (0: never).
    short_at: float = 0.5
    short_factor: float = 0.5
    # Seconds between two health probes of each server.
    health_interval_s: float = 5.0


@dataclass(slots=True, eq=False)
class Ticket:
    """One call: waiting (``server`` None) or holding a slot of ``server``."""

    id: int
    priority: int
    at: float
    server: int | None = None
    # Servers this call failed on: tried last.
    failed: set[int] = field(default_factory=set)
    # The key that orders the waiting list (priority first, then age).
    key: tuple[int, int] = (0, 0)


class ModelQueue:
    """The waiting calls and the slots of one model's servers."""

    __slots__ = ("_ids", "_waiting", "config", "healthy", "in_flight")

    def __init__(self, servers: int, config: GatewayConfig) -> None:
        if servers < 1:
            raise ValueError("a model needs at least one server")
        self.config = config
        self.in_flight = [0] * servers
        self.healthy = [True] * servers
        self._waiting: list[Ticket] = []
        self._ids = itertools.count()

    def __len__(self) -> int:
        return len(self._waiting)

    def capacity(self) -> int:
        """Slots of the servers that are up."""
        return self.config.concurrency * sum(self.healthy)

    def submit(self, priority: int, now: float) -> Ticket | None:
        """A waiting ticket, or None when the queue is full (refuse)."""
        if len(self._waiting) >= self.config.queue_size:
            return None
        t = Ticket(next(self._ids), priority, now)
        self._insert(t)
        return t

    def _insert(self, t: Ticket, front: bool = False) -> None:
        # Negative id puts a requeued call before every newer one of its priority.
        t.key = (-t.priority, -1 - t.id if front else t.id)
        bisect.insort(self._waiting, t, key=lambda x: x.key)

    def cancel(self, t: Ticket) -> None:
        """The caller gave up: forget it, or give its slot back."""
        if t.server is not None:
            self.release(t)
        elif t in self._waiting:
            self._waiting.remove(t)

    def release(self, t: Ticket) -> None:
        if t.server is not None:
            self.in_flight[t.server] -= 1
            t.server = None

    def requeue(self, t: Ticket) -> None:
        """The call failed on its server before any text: that server is
        marked down, the call waits again at the head of its priority."""
        server = t.server
        if server is not None:
            self.release(t)
            t.failed.add(server)
            self.healthy[server] = False
        self._insert(t, front=True)

    def mark(self, server: int, healthy: bool) -> None:
        self.healthy[server] = healthy

    def _pick(self, t: Ticket) -> int | None:
        """The server with the fewest calls in flight that is up, has a free
        slot, and (if any other can) did not fail this call."""
        cap = self.config.concurrency
        free = [s for s, n in enumerate(self.in_flight) if self.healthy[s] and n < cap]
        if not free:
            return None
        fresh = [s for s in free if s not in t.failed] or free
        return min(fresh, key=lambda s: (self.in_flight[s], s))

    def dispatch(self, now: float) -> list[tuple[Ticket, int | str]]:
        """What happens to waiting calls now: a server index (granted),
        ``queue_timeout`` or ``no_server`` (refused)."""
        out: list[tuple[Ticket, int | str]] = []
        keep: list[Ticket] = []
        limit = self.config.max_wait_s
        up = any(self.healthy)
        for t in self._waiting:
            if not up:
                out.append((t, NO_SERVER))
            elif now - t.at >= limit:
                out.append((t, QUEUE_TIMEOUT))
            else:
                server = self._pick(t)
                if server is None:
                    keep.append(t)
                else:
                    t.server = server
                    self.in_flight[server] += 1
                    out.append((t, server))
        self._waiting = keep
        return out

    def next_expiry(self) -> float | None:
        """When the oldest waiting call reaches the queue-time limit."""
        if not self._waiting:
            return None
        return min(t.at for t in self._waiting) + self.config.max_wait_s

    def loaded(self) -> bool:
        """Whether replies are shortened now (see the module's theory)."""
        c = self.config
        return c.short_at > 0 and len(self._waiting) >= c.short_at * max(1, self.capacity())

    def max_tokens(self, wanted: int) -> int:
        if not self.loaded():
            return wanted
        return max(1, int(wanted * self.config.short_factor))

    def retry_after(self) -> float:
        """A hint for a refused caller: the queue-time limit."""
        return self.config.max_wait_s
